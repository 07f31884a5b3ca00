package media

import (
	"context"
	"net/http"
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

// quotaTracker applies the quotas to what the user uploaded, as the
// database records it: the same answer in every process, and across
// restarts.
type quotaTracker struct {
	limits []UploadLimit
	usage  func(ctx context.Context, user string, since time.Time) (int64, error)
}

func newQuotaTracker(limits []UploadLimit, usage func(ctx context.Context, user string, since time.Time) (int64, error)) *quotaTracker {
	q := &quotaTracker{usage: usage}
	for _, l := range limits {
		if l.Period > 0 && l.MaxSize > 0 {
			q.limits = append(q.limits, l)
		}
	}
	return q
}

// check returns how many bytes user may still upload now (0 when there is
// no quota), or errQuota if that is nothing or less than length (the
// declared size, -1 if unknown).
func (q *quotaTracker) check(ctx context.Context, user string, length int64, now time.Time) (int64, error) {
	if len(q.limits) == 0 {
		return 0, nil
	}
	left := int64(-1)
	for _, l := range q.limits {
		used, err := q.usage(ctx, user, now.Add(-l.Period))
		if err != nil {
			return 0, err
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
