package stream

import (
	"context"
	"time"
)

// Lazy cursor bounds: a cursor that moved without being stored is stored
// once it is this many positions or this long ahead of the stored one.
const (
	lazyCursorPositions = 1000
	lazyCursorAge       = 5 * time.Second
)

// LazyCursor is a leased reader's cursor kept in memory between steps. A
// step that writes something stores the cursor with it; a step that finds
// nothing to write moves it in memory only, and it is stored later (with
// the next write, or once it is far or long enough ahead): after a crash
// the reader reads those positions again and again writes nothing. The
// zero value is unloaded; Reset it each time the reader's lease is taken,
// since another process may have moved the cursor meanwhile.
type LazyCursor struct {
	loaded      bool
	pos, stored int64
	storedAt    time.Time
}

// Reset forgets the cursor: the next Get reads it from the database.
func (c *LazyCursor) Reset() { c.loaded = false }

// Get returns the cursor, reading it with load the first time.
func (c *LazyCursor) Get(ctx context.Context, load func(context.Context) (int64, error)) (int64, error) {
	if c.loaded {
		return c.pos, nil
	}
	pos, err := load(ctx)
	if err != nil {
		return 0, err
	}
	c.loaded, c.pos, c.stored, c.storedAt = true, pos, pos, time.Now()
	return pos, nil
}

// StoreDue tells whether a step that wrote nothing should still store the
// cursor, moved to pos.
func (c *LazyCursor) StoreDue(pos int64) bool {
	return pos-c.stored >= lazyCursorPositions || (pos > c.stored && time.Since(c.storedAt) >= lazyCursorAge)
}

// Stored records that the cursor was stored at pos.
func (c *LazyCursor) Stored(pos int64) {
	c.loaded, c.pos, c.stored, c.storedAt = true, pos, pos, time.Now()
}

// Moved records that the cursor moved to pos in memory only.
func (c *LazyCursor) Moved(pos int64) { c.pos = max(c.pos, pos) }
