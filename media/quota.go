package media

import (
	"net/http"
	"sync"
	"time"

	"homeserver/mxhttp"
)

// UploadLimit is one per-user quota: at most MaxSize bytes uploaded within
// any Period (Synapse's media_upload_limits entry).
type UploadLimit struct {
	Period  time.Duration
	MaxSize int64
}

// errQuota is the spec's answer for a user over an upload quota: the upload
// endpoints list 403 M_FORBIDDEN for "The user has reached a quota for
// uploaded content".
func errQuota() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusForbidden, Code: "M_FORBIDDEN", Message: "Media upload limit exceeded"}
}

// quotaTracker remembers recent uploads per user, in memory, for as long as
// the longest period. Uploads made before a restart are not counted.
type quotaTracker struct {
	limits  []UploadLimit
	longest time.Duration
	mu      sync.Mutex
	uploads map[string][]quotaEntry // oldest first
}

type quotaEntry struct {
	at   time.Time
	size int64
}

func newQuotaTracker(limits []UploadLimit) *quotaTracker {
	q := &quotaTracker{uploads: make(map[string][]quotaEntry)}
	for _, l := range limits {
		if l.Period > 0 && l.MaxSize > 0 {
			q.limits = append(q.limits, l)
			q.longest = max(q.longest, l.Period)
		}
	}
	return q
}

// check returns how many bytes user may still upload now (0 when there is
// no quota), or errQuota if that is nothing or less than length (the
// declared size, -1 if unknown).
func (q *quotaTracker) check(user string, length int64, now time.Time) (int64, error) {
	if len(q.limits) == 0 {
		return 0, nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	entries := q.prune(user, now)
	left := int64(-1)
	for _, l := range q.limits {
		var used int64
		since := now.Add(-l.Period)
		for _, e := range entries {
			if e.at.After(since) {
				used += e.size
			}
		}
		if r := l.MaxSize - used; left < 0 || r < left {
			left = r
		}
	}
	if left <= 0 || length > left {
		return 0, errQuota()
	}
	return left, nil
}

// record counts an upload of size bytes by user.
func (q *quotaTracker) record(user string, size int64, now time.Time) {
	if len(q.limits) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.uploads[user] = append(q.prune(user, now), quotaEntry{at: now, size: size})
}

// prune drops user's entries older than the longest period; q.mu is held.
func (q *quotaTracker) prune(user string, now time.Time) []quotaEntry {
	entries := q.uploads[user]
	cut := 0
	for cut < len(entries) && !entries[cut].at.After(now.Add(-q.longest)) {
		cut++
	}
	entries = entries[cut:]
	if len(entries) == 0 {
		delete(q.uploads, user)
		return nil
	}
	q.uploads[user] = entries
	return entries
}
