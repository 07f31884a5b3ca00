package syncapi

import (
	"slices"
	"sync"
	"time"

	"homeserver/mxhttp"
)

// Limits bound the long-polls (/sync, /events) waiting at once. A waiting
// long-poll costs no database connection, only its connection, goroutines
// and buffers (see BENCHMARKS.md, "Idle long-polls"); these bound that.
type Limits struct {
	// PerUser long-polls of one user wait at once; a further one answers
	// the user's oldest at once. 0: DefaultLongPollsPerUser.
	PerUser int
	// Total long-polls wait at once on this process; a further one is
	// refused with 429 M_LIMIT_EXCEEDED. 0: no limit.
	Total int
}

// DefaultLongPollsPerUser leaves room for a user's every client (a few
// devices, each with a sync and a legacy /events or two) while keeping one
// account from holding thousands of connections.
const DefaultLongPollsPerUser = 10

// longPollRetry is the retry_after_ms of a long-poll refused for the
// process's limit: about the time a few waiting ones take to be answered.
const longPollRetry = 5 * time.Second

// admission counts the waiting long-polls.
type admission struct {
	perUser, total int

	mu     sync.Mutex
	count  int
	byUser map[string][]*poll // oldest first
}

// poll is one admitted long-poll; evicted closes when a newer one of the
// same user took its place.
type poll struct {
	user    string
	evicted chan struct{}
}

func newAdmission(l Limits) *admission {
	if l.PerUser <= 0 {
		l.PerUser = DefaultLongPollsPerUser
	}
	return &admission{perUser: l.PerUser, total: l.Total, byUser: map[string][]*poll{}}
}

// admit lets one more long-poll of user wait. Over the user's limit it
// answers the user's oldest rather than refusing the newest: the spec lets
// a long-poll end before its timeout, a client whose old connections died
// unnoticed is never locked out, and the newest (the one the client is
// waiting on) keeps waiting, so no client loops. Over the process's limit
// it refuses with M_LIMIT_EXCEEDED, whose retry_after_ms makes clients back
// off where an early empty answer would have them ask again at once.
func (a *admission) admit(user string) (*poll, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	polls := a.byUser[user]
	if len(polls) >= a.perUser {
		close(polls[0].evicted)
		polls = slices.Delete(polls, 0, 1)
		a.count--
	} else if a.total > 0 && a.count >= a.total {
		return nil, mxhttp.LimitExceeded(longPollRetry)
	}
	p := &poll{user: user, evicted: make(chan struct{})}
	a.byUser[user] = append(polls, p)
	a.count++
	return p, nil
}

// release ends p's wait (a no-op for an evicted one).
func (a *admission) release(p *poll) {
	if p == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	polls := a.byUser[p.user]
	if i := slices.Index(polls, p); i >= 0 {
		polls = slices.Delete(polls, i, i+1)
		a.count--
	}
	if len(polls) == 0 {
		delete(a.byUser, p.user)
	} else {
		a.byUser[p.user] = polls
	}
}
