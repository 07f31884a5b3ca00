package userdir

import (
	"context"

	"homeserver/accounts"
	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// Entry is one user of the directory, as stored and as searched for.
type Entry struct {
	UserID      string
	DisplayName string // "" when the user has none
	AvatarURL   string // "" when the user has none
	Local       bool
	// SortKey orders results: the lower-cased display name, or localpart.
	SortKey string
	// Tokens are the words a search term's words are matched against by
	// prefix (filled when storing; empty in results).
	Tokens []string
}

// Update is what one step of the directory's reader changes, applied in
// one transaction with its cursor.
type Update struct {
	Put    []Entry
	Delete []string
	// Public maps each room whose visibility was re-read to whether its
	// members are visible to everyone.
	Public map[string]bool
}

// Query is one search.
type Query struct {
	Searcher string
	// Words must each prefix-match one of a user's tokens.
	Words []string
	Limit int
	// AllLocal makes every local user visible (search_all_users).
	AllLocal bool
	// PreferLocal orders local users first (prefer_local_users).
	PreferLocal bool
}

// Store is the persistence the directory needs; storage implements it.
type Store interface {
	ReaderCursor(ctx context.Context, reader string, s stream.Name) (pos int64, ok bool, err error)
	EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error)
	CurrentState(ctx context.Context, roomID string, keys []pdu.StateKey) ([]rooms.Stored, error)
	GetAccount(ctx context.Context, userID string) (accounts.Account, error)
	GetProfile(ctx context.Context, userID string) (accounts.Profile, error)

	// UserDirectoryLocalMissing lists up to limit local users that may be
	// listed (not deactivated, not registered by an application service)
	// and have no directory entry yet.
	UserDirectoryLocalMissing(ctx context.Context, limit int) ([]string, error)
	// UpdateUserDirectory applies u and, when cursor >= 0, sets the
	// reader's cursor in the events stream, in one transaction.
	UpdateUserDirectory(ctx context.Context, reader string, u Update, cursor int64) error
	// SearchUserDirectory returns up to q.Limit+1 visible matches, best
	// first.
	SearchUserDirectory(ctx context.Context, q Query) ([]Entry, error)
}
