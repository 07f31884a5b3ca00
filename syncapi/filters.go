package syncapi

import (
	"context"
	"errors"
	"strings"

	"homeserver/filter"
	"homeserver/mxhttp"
)

// CreateFilter stores a filter for the user and returns its ID.
func (s *Service) CreateFilter(ctx context.Context, userID string, data []byte) (string, error) {
	if _, err := filter.ParseFilter(data); err != nil {
		return "", mxhttp.BadJSON("Invalid filter: %v", err)
	}
	return s.filters.CreateFilter(ctx, userID, data)
}

// GetFilter returns a stored filter's JSON.
func (s *Service) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	data, err := s.filters.GetFilter(ctx, userID, filterID)
	if errors.Is(err, ErrNotFound) {
		return nil, mxhttp.NotFound("No such filter")
	}
	return data, err
}

// ResolveFilter reads /sync's filter parameter: inline JSON or a filter ID.
func (s *Service) ResolveFilter(ctx context.Context, userID, param string) (*filter.Filter, error) {
	if param == "" {
		return &filter.Filter{}, nil
	}
	data := []byte(param)
	if !strings.HasPrefix(strings.TrimSpace(param), "{") {
		var err error
		data, err = s.filters.GetFilter(ctx, userID, param)
		if errors.Is(err, ErrNotFound) {
			return nil, mxhttp.InvalidParam("Unknown filter %q", param)
		}
		if err != nil {
			return nil, err
		}
	}
	f, err := filter.ParseFilter(data)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid filter: %v", err)
	}
	return f, nil
}
