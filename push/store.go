package push

import (
	"context"
	"encoding/json"

	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// Notification is one event that a user's rules said notify for.
type Notification struct {
	ID        int64
	UserID    string
	RoomID    string
	EventID   string
	Pos       int64 // the event's stream position
	TS        int64 // when the notification was made (ms)
	Actions   json.RawMessage
	Highlight bool
	ThreadID  string // "main" or the thread root's event ID
	Read      bool   // filled by Notifications
}

// Counts are a room's (or thread's) unread notification counts.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// Pusher is a registered pusher.
type Pusher struct {
	ID                int64
	UserID            string
	AppID             string
	PushKey           string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              json.RawMessage
	PushKeyTS         int64
	// DeviceID is the device whose session set the pusher; it goes when
	// that session is ended by a password change.
	DeviceID string
}

// Store is the persistence push needs; storage implements it.
type Store interface {
	// PushRules returns the stored rules of those users that have any.
	PushRules(ctx context.Context, userIDs []string) (map[string][]byte, error)
	// IgnoredUserLists returns the m.ignored_user_list content of those
	// users that have one.
	IgnoredUserLists(ctx context.Context, userIDs []string) (map[string][]byte, error)
	SetPushRules(ctx context.Context, userID string, data []byte) error

	// ReaderCursor returns a durable reader's cursor in a stream; ok is
	// false when it has none.
	ReaderCursor(ctx context.Context, reader string, s stream.Name) (pos int64, ok bool, err error)
	SetReaderCursor(ctx context.Context, reader string, s stream.Name, pos int64) error
	// EventsAfter returns up to limit events after the stream position, in
	// stream order.
	EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error)
	// AddNotifications stores ns and sets the evaluator's cursor to cursor
	// in one transaction.
	AddNotifications(ctx context.Context, reader string, ns []Notification, cursor int64) error
	// UnreadCounts returns the user's notifications in the room not yet
	// covered by a read receipt, by thread ("main" for the main timeline).
	UnreadCounts(ctx context.Context, userID, roomID string) (map[string]Counts, error)
	// Notifications pages the user's notifications backwards from before
	// (exclusive; 0 for the newest).
	Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error)
	// NotificationsAfter returns the user's unread notifications with ID
	// greater than after, oldest first.
	NotificationsAfter(ctx context.Context, userID string, after int64, limit int) ([]Notification, error)
	// MaxNotificationID is the greatest notification ID (0 when none).
	MaxNotificationID(ctx context.Context) (int64, error)
	// RoomsNotifiedBetween lists the rooms of the user's notifications
	// with IDs in (from, to].
	RoomsNotifiedBetween(ctx context.Context, userID string, from, to int64) ([]string, error)

	Pushers(ctx context.Context, userID string) ([]Pusher, error)
	AllPushers(ctx context.Context) ([]Pusher, error)
	// PutPusher creates or replaces the pusher (app_id, pushkey, user);
	// unless appendIt, pushers of other users with the same app_id and
	// pushkey are removed. It returns the pusher's ID.
	PutPusher(ctx context.Context, p Pusher, appendIt bool) (int64, error)
	// DeletePusher removes a pusher and its cursor.
	DeletePusher(ctx context.Context, appID, pushKey, userID string) error
	// DeletePushersOfOtherDevices deletes the user's pushers set by any
	// device but keep.
	DeletePushersOfOtherDevices(ctx context.Context, userID, keep string) error

	CurrentState(ctx context.Context, roomID string, keys []pdu.StateKey) ([]rooms.Stored, error)
	CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]rooms.Stored, error)
	MaxPos(ctx context.Context) (int64, error)
	GetEvent(ctx context.Context, eventID string) (rooms.Stored, error)
	// UnreadTotal counts the user's unread notifications in every room.
	UnreadTotal(ctx context.Context, userID string) (int, error)
}
