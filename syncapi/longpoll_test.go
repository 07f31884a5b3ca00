package syncapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// polled is the answer to one long-poll.
type polled struct {
	status int
	body   map[string]any
	err    error
}

// longPoll starts GET /sync?since=…&timeout=120000 for token; the answer
// comes on the returned channel.
func longPoll(ctx context.Context, s *testserver.Server, token, since string) <-chan polled {
	ch := make(chan polled, 1)
	go func() {
		q := url.Values{"since": {since}, "timeout": {"120000"}, "set_presence": {"offline"}}
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- polled{err: err}
			return
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var body map[string]any
		_ = json.Unmarshal(data, &body)
		ch <- polled{status: resp.StatusCode, body: body}
	}()
	return ch
}

// A user's long-polls beyond the per-user limit answer that user's oldest
// at once; beyond the process's limit a new one is refused with 429.
func TestLongPollLimits(t *testing.T) {
	s := testserver.Start(t, "long_polls:\n  per_user: 2\n  max: 3\n")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	since := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", alice.Token, nil).String("next_batch")
	// Cancelled before the server stops, so that it need not wait the
	// long-polls out.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	a1 := longPoll(ctx, s, alice.Token, since)
	sbWaitParked(t, 1)
	a2 := longPoll(ctx, s, alice.Token, since)
	sbWaitParked(t, 2)
	a3 := longPoll(ctx, s, alice.Token, since)
	// The oldest is answered now, as if its timeout had passed (the
	// safety net below is far shorter than that timeout).
	select {
	case r := <-a1:
		if r.err != nil || r.status != http.StatusOK || r.body["next_batch"] == nil {
			t.Fatalf("evicted long-poll: %+v", r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a third long-poll of the same user left the first waiting")
	}
	sbWaitParked(t, 2)
	select {
	case r := <-a2:
		t.Fatalf("the second long-poll ended too: %+v", r)
	case r := <-a3:
		t.Fatalf("the newest long-poll ended: %+v", r)
	default:
	}

	b1 := longPoll(ctx, s, bob.Token, since)
	sbWaitParked(t, 3)
	r := <-longPoll(ctx, s, bob.Token, since)
	if r.err != nil || r.status != http.StatusTooManyRequests || r.body["errcode"] != "M_LIMIT_EXCEEDED" {
		t.Fatalf("long-poll over the process's limit: %+v", r)
	}
	if ms, _ := r.body["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("no retry_after_ms: %+v", r.body)
	}
	// A sync with something to say needs no place: it is answered.
	if r := s.Do("GET", "/_matrix/client/v3/sync?timeout=120000", bob.Token, nil); r.Status != http.StatusOK {
		t.Fatalf("initial sync at the limit: %d %s", r.Status, r.Body)
	}
	cancel()
	for _, ch := range []<-chan polled{a2, a3, b1} {
		<-ch
	}
}
