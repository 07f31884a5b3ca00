package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"

	"homeserver/mxhttp"
)

const (
	maxProfileBytes = 64 * 1024
	maxProfileKey   = 255
)

var profileKeyRe = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// GetProfile returns a user's profile as the JSON object the API serves.
func (s *Service) GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	p, err := s.store.GetProfile(ctx, userID)
	if errors.Is(err, ErrNotFound) && s.QueryUser(ctx, userID) {
		p, err = s.store.GetProfile(ctx, userID)
	}
	if errors.Is(err, ErrNotFound) {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	return profileObject(p), nil
}

// SetUserQuerier makes lookups of unknown local users ask q, which reports
// whether the user now exists (an application service may register it while
// answering). Call it before serving.
func (s *Service) SetUserQuerier(q func(ctx context.Context, userID string) bool) {
	s.queryUser = q
}

// QueryUser asks the user querier, if any, about an unknown local user and
// reports whether it says the user now exists.
func (s *Service) QueryUser(ctx context.Context, userID string) bool {
	return s.queryUser != nil && s.IsLocal(userID) && s.queryUser(ctx, userID)
}

func profileObject(p Profile) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(p.Fields)+2)
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != nil {
		out["displayname"], _ = json.Marshal(*p.DisplayName)
	}
	if p.AvatarURL != nil {
		out["avatar_url"], _ = json.Marshal(*p.AvatarURL)
	}
	return out
}

// SetProfileField sets (value != nil) or deletes (value == nil) one field of
// the requester's own profile.
func (s *Service) SetProfileField(ctx context.Context, r *Requester, userID, key string, value json.RawMessage) error {
	if len(key) > maxProfileKey {
		return &mxhttp.Error{Status: http.StatusBadRequest, Code: "M_KEY_TOO_LARGE", Message: "Profile key too long"}
	}
	if !profileKeyRe.MatchString(key) {
		return mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	if userID != r.UserID && !r.IsAdmin {
		return mxhttp.Forbidden("Cannot change another user's profile")
	}
	if !s.IsLocal(userID) {
		return mxhttp.Forbidden("Cannot change a remote user's profile")
	}
	p, err := s.store.GetProfile(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return err
	}
	// Only DELETE clears a field: the spec types displayname, avatar_url
	// and m.tz as strings, so a PUT of null is a malformed value.
	if value != nil && bytes.Equal(bytes.TrimSpace(value), []byte("null")) && (key == "displayname" || key == "avatar_url" || key == "m.tz") {
		return mxhttp.BadJSON("%s must be a string", key)
	}
	switch key {
	case "displayname":
		if value == nil {
			p.DisplayName = nil
			break
		}
		var name string
		if json.Unmarshal(value, &name) != nil {
			return mxhttp.BadJSON("displayname must be a string")
		}
		if len(name) > MaxDisplayName {
			return mxhttp.InvalidParam("displayname may not be longer than %d bytes", MaxDisplayName)
		}
		p.DisplayName = &name
	case "avatar_url":
		if value == nil {
			p.AvatarURL = nil
			break
		}
		var url string
		if json.Unmarshal(value, &url) != nil {
			return mxhttp.BadJSON("avatar_url must be a string")
		}
		// Any string is taken, as Synapse does: clients and bridges set
		// http(s) avatars, and refusing them only loses the profile.
		if len(url) > 1000 {
			return mxhttp.InvalidParam("avatar_url too long")
		}
		p.AvatarURL = &url
	default:
		if key == "m.tz" && value != nil {
			var tz string
			if json.Unmarshal(value, &tz) != nil {
				return mxhttp.BadJSON("m.tz must be a string")
			}
		}
		if p.Fields == nil {
			p.Fields = map[string]json.RawMessage{}
		}
		if value == nil {
			delete(p.Fields, key)
		} else {
			p.Fields[key] = value
		}
	}
	if size, _ := json.Marshal(profileObject(p)); len(size) > maxProfileBytes {
		return &mxhttp.Error{Status: http.StatusBadRequest, Code: "M_PROFILE_TOO_LARGE", Message: "Profile would exceed 64 KiB"}
	}
	return s.store.PutProfile(ctx, userID, p)
}
