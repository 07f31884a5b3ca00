package server

import (
	"context"
	"encoding/json"
	"errors"

	"homeserver/accounts"
)

// profiles lets the rooms service read local users' profiles for their
// membership events.
type profiles struct{ acc *accounts.Service }

func (p profiles) Profile(ctx context.Context, userID string) (string, string, error) {
	fields, err := p.acc.GetProfile(ctx, userID)
	if err != nil {
		return "", "", err
	}
	var name, avatar string
	_ = json.Unmarshal(fields["displayname"], &name)
	_ = json.Unmarshal(fields["avatar_url"], &avatar)
	return name, avatar, nil
}

func (p profiles) Exists(ctx context.Context, userID string) (bool, error) {
	acc, err := p.acc.GetAccount(ctx, userID)
	if errors.Is(err, accounts.ErrNotFound) && p.acc.QueryUser(ctx, userID) {
		// An application service says it exists: it has registered it.
		acc, err = p.acc.GetAccount(ctx, userID)
	}
	if errors.Is(err, accounts.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !acc.Deactivated, nil
}

func (p profiles) IsGuest(ctx context.Context, userID string) (bool, error) {
	acc, err := p.acc.GetAccount(ctx, userID)
	if errors.Is(err, accounts.ErrNotFound) {
		return false, nil
	}
	return acc.IsGuest, err
}
