package faultpeer

import (
	"bytes"
	"log/slog"
	"sync"
)

// Logs collects log records as text, at every level: for tests of what
// reaches the logs (a secret must never). It is safe for concurrent use.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Logs) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

// String returns everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Handler returns a handler writing every record into l.
func (l *Logs) Handler() slog.Handler {
	return slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})
}

// Logger returns a logger writing every record into l.
func (l *Logs) Logger() *slog.Logger { return slog.New(l.Handler()) }
