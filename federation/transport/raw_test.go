package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"homeserver/federation/transport"
)

func TestClientDoRaw(t *testing.T) {
	f := newFixture(t, true)
	c := f.client(t, nil)
	ctx := context.Background()

	// The echo answer is signed and authenticated like Do's.
	status, h, data, err := c.DoRaw(ctx, "GET", "dest.test", "/_matrix/federation/v1/media/download/abc", nil, 1<<20)
	if err != nil || status != http.StatusOK {
		t.Fatalf("DoRaw: %d, %v", status, err)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got seen
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Origin != "origin.test" || got.RequestURI != "/_matrix/federation/v1/media/download/abc" {
		t.Errorf("server saw %+v", got)
	}

	// Error statuses are answers, not errors.
	status, _, data, err = c.DoRaw(ctx, "GET", "dest.test", "/_matrix/federation/v1/fail", nil, 1<<20)
	if err != nil || status != http.StatusNotFound || !strings.Contains(string(data), "M_NOT_FOUND") {
		t.Errorf("fail: %d %s %v", status, data, err)
	}

	// The limit is the caller's.
	_, _, _, err = c.DoRaw(ctx, "GET", "dest.test", "/_matrix/federation/v1/big", nil, 100)
	if !errors.Is(err, transport.ErrResponseTooLarge) {
		t.Errorf("big: %v, want ErrResponseTooLarge", err)
	}
	if _, _, data, err = c.DoRaw(ctx, "GET", "dest.test", "/_matrix/federation/v1/big", nil, 1<<20); err != nil || len(data) < 4096 {
		t.Errorf("big within limit: %d bytes, %v", len(data), err)
	}

	// Refusals happen before any network access.
	if _, _, _, err = c.DoRaw(ctx, "GET", "origin.test", "/x", nil, 10); !errors.Is(err, transport.ErrSelf) {
		t.Errorf("self: %v", err)
	}
	wl := f.client(t, func(o *transport.ClientOptions) { o.DomainWhitelist = []string{} })
	if _, _, _, err = wl.DoRaw(ctx, "GET", "dest.test", "/x", nil, 10); !errors.Is(err, transport.ErrNotWhitelisted) {
		t.Errorf("whitelist: %v", err)
	}
	if _, _, _, err = c.DoRaw(ctx, "GET", "dest.test", "no-slash", nil, 10); err == nil {
		t.Error("invalid request URI accepted")
	}
}

func TestClientDoStream(t *testing.T) {
	f := newFixture(t, false)
	c := f.client(t, nil)
	calls := 0
	sentinel := errors.New("stop")
	err := c.DoStream(context.Background(), "GET", "dest.test", "/_matrix/federation/v1/big", nil,
		func(status int, h http.Header, body io.Reader) error {
			calls++
			b := make([]byte, 10)
			if _, err := io.ReadFull(body, b); err != nil {
				t.Errorf("reading: %v", err)
			}
			if status != http.StatusOK || string(b) != `{"x":"xxxx` {
				t.Errorf("got %d %q", status, b)
			}
			return sentinel // the rest is never read
		})
	if !errors.Is(err, sentinel) || calls != 1 {
		t.Errorf("DoStream: %v after %d calls", err, calls)
	}
	// Unauthenticated: the answer is handed over as it is.
	other := f.client(t, func(o *transport.ClientOptions) { o.Key = testKey("origin.test", 9) })
	err = other.DoStream(context.Background(), "GET", "dest.test", "/x", nil, func(status int, _ http.Header, body io.Reader) error {
		b, _ := io.ReadAll(body)
		if status != http.StatusUnauthorized || !strings.Contains(string(b), "M_UNAUTHORIZED") {
			t.Errorf("got %d %s", status, b)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
