// Package stream is the spine of the homeserver: the ordered streams every
// write is recorded in, the hub that announces what was written, and the
// one loop by which durable readers (application service queues, the push
// evaluator, pushers, later federation destinations) follow a stream from
// a cursor kept in the database.
//
// Writers take a position of a stream inside their own transaction (the
// storage package's counter rows, whose row lock makes positions commit in
// the order they are handed out, across processes); after commit they
// announce the change on the hub. The hub only ever says "look again":
// readers read from their own cursors, so a lost or duplicated wake-up
// costs at most a useless read, and a reader that was down catches up.
package stream

// Name names a stream.
type Name string

// The streams. Each has its own positions; a sync token is a tuple of them.
const (
	Events        Name = "events"
	Receipts      Name = "receipts"
	AccountData   Name = "account_data"
	Presence      Name = "presence"
	Typing        Name = "typing"
	ToDevice      Name = "to_device"
	DeviceLists   Name = "device_lists"
	OTK           Name = "otk"
	Notifications Name = "notifications"
	// Pushers has no positions: it says the set of pushers changed.
	Pushers Name = "pushers"
)

// Change is one announcement: something was written to a stream, up to a
// position, concerning some rooms and users (whose syncs it may wake).
type Change struct {
	Stream Name     `json:"s"`
	Pos    int64    `json:"p,omitempty"`
	Rooms  []string `json:"r,omitempty"`
	Users  []string `json:"u,omitempty"`
	// Data carries what a stream kept in memory needs to apply the change
	// elsewhere (typing); nil for the streams read from the database.
	Data []byte `json:"d,omitempty"`
	// Remote is set on changes that came from another process.
	Remote bool `json:"-"`
}
