package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"homeserver/pdu"
)

// Errors the store returns for the service to translate.
var (
	ErrNotFound     = errors.New("rooms: not found")
	ErrAliasExists  = errors.New("rooms: alias exists")
	ErrDuplicateTxn = errors.New("rooms: duplicate transaction")
)

// Room is a room's row.
type Room struct {
	RoomID    string
	Version   string
	Creator   string
	Published bool
	CreatedTS int64
}

// Stored is an event as persisted, with the fields readers need without
// parsing the PDU.
type Stored struct {
	Pos        int64
	EventID    string
	RoomID     string
	Type       string
	StateKey   *string
	Sender     string
	Membership string
	Depth      int64
	TS         int64
	StateGroup int64
	RedactedBy string
	// ReplacesState is the state event this one replaced, if any.
	ReplacesState string
	JSON          []byte
	// ViewerMembership, set by the reads that filter events for a user, is
	// that user's membership at the event (unsigned.membership).
	ViewerMembership string
}

// MemberChange is one membership event, with the membership it replaced.
type MemberChange struct {
	RoomID, UserID       string
	Membership, Previous string
	// Pos is the membership event's position.
	Pos int64
}

// TxnRef identifies a client transaction. The spec scopes a transaction ID
// to the device (Scope) and the request path (Path: the room and event type,
// or the redacted event), so the same ID sent elsewhere is a new event.
type TxnRef struct {
	UserID, Scope, Path, TxnID string
}

// Relation is an m.relates_to of an event, indexed at write time.
type Relation struct {
	RelatesTo, RelType string
}

// NewEvent is everything written with one event, in one transaction.
type NewEvent struct {
	Event *pdu.Event
	// Room is set for m.room.create: the room row is created with the event.
	Room *Room
	Txn  *TxnRef
	// Relation, when set, goes into the relations index.
	Relation *Relation
	// RedactTarget is the event to mark redacted (m.room.redaction).
	RedactTarget string
	// StateAfter, when set, is the state after the event in full, and
	// CurrentState the room's state after it (nil: StateAfter): set when
	// the event does not simply extend the room's only forward extremity,
	// and the states of its branches had to be resolved.
	StateAfter, CurrentState []StateEntry
	// Received marks an event from another server: its prev_events may
	// be unknown here, holes that backfill fills later.
	Received bool
}

// StateEntry is one (type, state_key) -> event of a room's state.
type StateEntry struct {
	Type, StateKey, EventID string
}

// Store is the persistence of rooms.
type Store interface {
	// PersistEvent writes the event, its state, the room's current state,
	// forward extremities, the transaction ID and indexes atomically and
	// returns its stream position. A duplicate Txn returns ErrDuplicateTxn.
	PersistEvent(ctx context.Context, ne NewEvent) (int64, error)
	// PersistEvents writes several events as PersistEvent would, in one
	// transaction, in order.
	PersistEvents(ctx context.Context, nes []NewEvent) ([]int64, error)

	GetRoom(ctx context.Context, roomID string) (Room, error)
	// Extremities returns the forward extremities and the greatest depth.
	Extremities(ctx context.Context, roomID string) ([]string, int64, error)
	// CurrentState returns the current state events for the given keys (all
	// when keys is nil).
	CurrentState(ctx context.Context, roomID string, keys []pdu.StateKey) ([]Stored, error)
	// UserRoomInfos reads what room lists are filtered and ordered by, of
	// the rooms the user has a membership of; whether they are encrypted
	// only when asked.
	UserRoomInfos(ctx context.Context, userID string, encryption bool) ([]RoomInfoRow, error)
	// CreateEvents returns the create event of each room known among
	// roomIDs.
	CreateEvents(ctx context.Context, roomIDs []string) (map[string][]byte, error)
	// CurrentStateOfType returns the current state events of one type.
	CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]Stored, error)
	// StateAt returns the state entries of a state group, filtered to keys
	// when keys is non-nil.
	StateAt(ctx context.Context, stateGroup int64, keys []pdu.StateKey) ([]StateEntry, error)
	GetEvent(ctx context.Context, eventID string) (Stored, error)
	GetEvents(ctx context.Context, eventIDs []string) ([]Stored, error)
	TxnEvent(ctx context.Context, t TxnRef) (string, error)
	// Membership returns a user's current membership of a room ("" if none).
	Membership(ctx context.Context, roomID, userID string) (string, error)
	// RoomsOf returns the rooms in which the user's current membership is m.
	RoomsOf(ctx context.Context, userID, membership string) ([]string, error)
	// MemberEvents returns the user's m.room.member events in the room, in
	// stream order.
	MemberEvents(ctx context.Context, roomID, userID string) ([]Stored, error)
	// TypeEvents returns the state events of one type in stream order
	// (history visibility changes, for instance).
	TypeEvents(ctx context.Context, roomID, eventType string) ([]Stored, error)
	// RoomEvents pages through a room's events by stream position: those in
	// (from, to) exclusive, ascending when forward, at most limit.
	RoomEvents(ctx context.Context, roomID string, from, to int64, forward bool, limit int) ([]Stored, error)
	MaxPos(ctx context.Context) (int64, error)
	// StateGroupAt is the room's state group after the last event at or
	// before pos (0 when there is none).
	StateGroupAt(ctx context.Context, roomID string, pos int64) (int64, error)
	// StateGroupAtCurrent is StateGroupAt, and whether that group is the
	// room's current state (then held in current_state too).
	StateGroupAtCurrent(ctx context.Context, roomID string, pos int64) (group int64, current bool, err error)

	CreateAlias(ctx context.Context, alias, roomID, creator string) error
	ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
	DeleteAlias(ctx context.Context, alias string) error
	RoomAliases(ctx context.Context, roomID string) ([]string, error)
	SetPublished(ctx context.Context, roomID string, published bool) error
	PublishedRooms(ctx context.Context) ([]string, error)

	Forget(ctx context.Context, userID, roomID string) error
	Forgotten(ctx context.Context, userID, roomID string) (bool, error)
	// IgnoredUserList is the content of the user's m.ignored_user_list
	// account data, nil when they have none.
	IgnoredUserList(ctx context.Context, userID string) (json.RawMessage, error)

	DirectoryStore
	AdminStore
	NetworkDirectoryStore
	RoomState
	History
	RelationsStore
	SyncStore
}

// DirectoryRoom is a room published in the room directory with its number
// of joined members.
type DirectoryRoom struct {
	RoomID        string
	JoinedMembers int
}

// DirectoryStore is the persistence of the room directory and of room
// upgrades; Store embeds it.
type DirectoryStore interface {
	// DirectoryRooms returns the published rooms with their joined member
	// counts, in no particular order.
	DirectoryRooms(ctx context.Context) ([]DirectoryRoom, error)
	// JoinedUserIDs returns the users whose current membership of the room
	// is join.
	JoinedUserIDs(ctx context.Context, roomID string) ([]string, error)
	// MoveAliases points every alias of one room at another and returns
	// the aliases moved.
	MoveAliases(ctx context.Context, fromRoomID, toRoomID string) ([]string, error)
	// LockRoom serialises the writing of a room's events with other
	// processes of the deployment until unlock.
	LockRoom(ctx context.Context, roomID string) (unlock func(), err error)
}

// SyncStore is what the sync read side needs beyond the rest of Store.
type SyncStore interface {
	// UserMemberships returns the user's current membership event in every
	// room they have one in.
	UserMemberships(ctx context.Context, userID string) ([]Stored, error)
	// UserMembershipHeads is UserMemberships without the events' JSON,
	// and with the sender only of invites, leaves and bans.
	UserMembershipHeads(ctx context.Context, userID string) ([]Stored, error)
	// RoomsWithEventsBetween returns the rooms with events in (from, to].
	RoomsWithEventsBetween(ctx context.Context, from, to int64) ([]string, error)
	// StateEventsBetween returns the room's state events in (from, to), in
	// stream order.
	StateEventsBetween(ctx context.Context, roomID string, from, to int64) ([]Stored, error)
	// MemberCounts counts the room's current memberships by kind.
	MemberCounts(ctx context.Context, roomID string) (map[string]int, error)
	// Heroes returns up to limit joined or invited members other than user.
	Heroes(ctx context.Context, roomID, user string, limit int) ([]string, error)
	// SharesRoom reports whether two users are joined to a common room.
	SharesRoom(ctx context.Context, a, b string) (bool, error)
	// UsersSharingRoom returns those of candidates joined to a room the
	// user is joined to.
	UsersSharingRoom(ctx context.Context, user string, candidates []string) ([]string, error)
	// MemberChangesBetween returns the membership events of the rooms in
	// (from, to], in stream order.
	MemberChangesBetween(ctx context.Context, roomIDs []string, from, to int64) ([]MemberChange, error)
	// TxnIDs maps those of eventIDs sent in the given transaction scope to
	// their transaction IDs.
	TxnIDs(ctx context.Context, userID, scope string, eventIDs []string) (map[string]string, error)
}
