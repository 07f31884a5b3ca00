package presence

import (
	"context"
	"errors"
	"fmt"

	"homeserver/mxhttp"
)

// MaxListSize bounds a presence list, and so what one GET of it reads.
const MaxListSize = 1000

// ErrListFull is returned by ListStore.EditPresenceList when the list would
// grow beyond its bound.
var ErrListFull = errors.New("presence: presence list full")

// ListStore persists presence lists (the 2015 API's /presence/list): the
// users whose presence each user follows. The database implements it next
// to Store.
type ListStore interface {
	// PresenceList returns the users on userID's list.
	PresenceList(ctx context.Context, userID string) ([]string, error)
	// EditPresenceList adds and drops users in one transaction (a user in
	// both is dropped), failing with ErrListFull, changing nothing, when
	// the list would hold more than limit users.
	EditPresenceList(ctx context.Context, userID string, add, drop []string, limit int) error
}

// ListEntry is one user of a presence list as the 2015 API answered it:
// the observed user's presence content, flattened, with the user's ID and
// whether they accepted (always, as local invitations are accepted at once).
type ListEntry struct {
	Accepted bool   `json:"accepted"`
	UserID   string `json:"user_id"`
	Content
}

func (s *Service) listStore() (ListStore, error) {
	ls, ok := s.store.(ListStore)
	if !ok {
		return nil, fmt.Errorf("presence: the store keeps no presence lists")
	}
	return ls, nil
}

// List returns the presence of every user on owner's presence list.
func (s *Service) List(ctx context.Context, owner string) ([]ListEntry, error) {
	ls, err := s.listStore()
	if err != nil {
		return nil, err
	}
	ids, err := ls.PresenceList(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]ListEntry, 0, len(ids))
	for _, id := range ids {
		st, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, ListEntry{Accepted: true, UserID: id, Content: s.Content(st)})
	}
	return out, nil
}

// EditList invites users to owner's presence list and drops users from it.
// accept decides which invitations are accepted: like Synapse, an
// invitation the observed user's server does not accept is not kept.
// Inviting oneself is ignored too.
func (s *Service) EditList(ctx context.Context, owner string, invite, drop []string, accept func(ctx context.Context, userID string) (bool, error)) error {
	ls, err := s.listStore()
	if err != nil {
		return err
	}
	if len(invite) > MaxListSize || len(drop) > MaxListSize {
		return mxhttp.InvalidParam("At most %d users may be invited or dropped at once", MaxListSize)
	}
	var add []string
	for _, id := range invite {
		if id == owner {
			continue
		}
		ok, err := accept(ctx, id)
		if err != nil {
			return err
		}
		if ok {
			add = append(add, id)
		}
	}
	err = ls.EditPresenceList(ctx, owner, add, drop, MaxListSize)
	if errors.Is(err, ErrListFull) {
		return mxhttp.InvalidParam("A presence list holds at most %d users", MaxListSize)
	}
	return err
}
