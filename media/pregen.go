package media

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"homeserver/mxhttp"
)

// thumbKey names one thumbnail: of which media, by which method, of which
// actual pixel size.
type thumbKey struct {
	origin, mediaID, method string
	w, h                    int
}

// thumbCall is one thumbnail being made; done is closed once t or err is
// set.
type thumbCall struct {
	done    chan struct{}
	t       Thumbnail
	err     error
	waiters int // requests waiting on it (for tests)
}

// thumbFlights are the thumbnails being made right now, by the background
// workers or by requests. It is a single-flight shared by both, keyed by
// thumbnail, which a worker can claim several keys of at once (it decodes
// once for all the sizes of an upload), and in which a request may wait
// for a larger thumbnail under way that will serve it.
type thumbFlights struct {
	mu    sync.Mutex
	calls map[thumbKey]*thumbCall
}

// claim returns the call making k, and whether it is the caller's to make
// (then the caller must finish it).
func (f *thumbFlights) claim(k thumbKey) (*thumbCall, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[k]; ok {
		return c, false
	}
	if f.calls == nil {
		f.calls = map[thumbKey]*thumbCall{}
	}
	c := &thumbCall{done: make(chan struct{})}
	f.calls[k] = c
	return c, true
}

// joined counts a request that waits on c, claimed by someone else.
func (f *thumbFlights) joined(c *thumbCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.waiters++
}

func (f *thumbFlights) finish(k thumbKey, c *thumbCall, t Thumbnail, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.t, c.err = t, err
	delete(f.calls, k)
	close(c.done)
}

// serving returns the call under way whose thumbnail would serve a request
// for k, as pick chooses among stored ones (excluding, like the request
// path, a static copy at the original's size unless that size is asked
// for), if it is smaller than stored, the best stored one (when not nil);
// nil if none. The caller waits through wait.
func (f *thumbFlights) serving(k thumbKey, origW, origH int, stored *Thumbnail) *thumbCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var cands []Thumbnail
	var calls []*thumbCall
	for ck, c := range f.calls {
		if ck.origin != k.origin || ck.mediaID != k.mediaID {
			continue
		}
		if (k.w != origW || k.h != origH) && ck.w == origW && ck.h == origH {
			continue
		}
		cands = append(cands, Thumbnail{Method: ck.method, Width: ck.w, Height: ck.h})
		calls = append(calls, c)
	}
	t, ok := pick(cands, k.w, k.h, k.method)
	if !ok || stored != nil && stored.Width*stored.Height <= t.Width*t.Height {
		return nil
	}
	c := calls[slices.Index(cands, t)]
	c.waiters++
	return c
}

// waiting counts the requests waiting for k (for tests).
func (f *thumbFlights) waiting(k thumbKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.calls[k]; ok {
		return c.waiters
	}
	return 0
}

func (c *thumbCall) wait(ctx context.Context) (Thumbnail, error) {
	select {
	case <-ctx.Done():
		return Thumbnail{}, ctx.Err()
	case <-c.done:
		return c.t, c.err
	}
}

// testHooks let tests watch and pause thumbnail making; nil in service.
type testHooks struct {
	// render is called before each thumbnail is rendered.
	render func(thumbKey)
}

// thumbQueue is the bounded queue of uploads whose configured thumbnail
// sizes are still to be made, and the few workers that make them. Workers
// start when there is work and stop when there is none, so an idle
// service holds no goroutine.
type thumbQueue struct {
	jobs chan Metadata
	ctx  context.Context // cancelled by Close
	stop context.CancelFunc

	mu      sync.Mutex
	workers int
	max     int
	closed  bool
	wg      sync.WaitGroup
}

func newThumbQueue(workers, size int) *thumbQueue {
	ctx, stop := context.WithCancel(context.Background())
	return &thumbQueue{jobs: make(chan Metadata, size), ctx: ctx, stop: stop, max: workers}
}

// enqueue schedules the configured thumbnails of new media. They are a
// cache: when the queue is full, or the server stops first, each is made
// on its first request instead.
func (s *Service) enqueue(m Metadata) {
	if len(s.cfg.ThumbnailSizes) == 0 || m.Width == 0 || m.Height == 0 ||
		int64(m.Width)*int64(m.Height) > s.cfg.MaxImagePixels {
		return
	}
	q := s.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	select {
	case q.jobs <- m:
	default:
		s.log.Debug("thumbnail queue full: thumbnails will be made on request", "media_id", m.MediaID)
		return
	}
	if q.workers < q.max {
		q.workers++
		q.wg.Add(1)
		go s.work()
	}
}

// work makes queued thumbnails until the queue is empty.
func (s *Service) work() {
	q := s.queue
	defer q.wg.Done()
	for {
		q.mu.Lock()
		var m Metadata
		select {
		case m = <-q.jobs:
		default:
			q.workers--
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		if q.ctx.Err() != nil {
			continue // drain: Close drops what is queued
		}
		s.pregenerate(q.ctx, m)
	}
}

// Close stops making thumbnails in the background and waits for the
// thumbnail being made to be finished. Queued media get theirs on request.
func (s *Service) Close() {
	q := s.queue
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.stop()
	q.wg.Wait()
}

// pregenerate makes the configured thumbnail sizes of m that are neither
// stored nor being made, from one decode of the original, largest first
// (each smaller one from a box-filtered copy of a larger: see source).
func (s *Service) pregenerate(ctx context.Context, m Metadata) {
	claimed := map[thumbKey]*thumbCall{}
	var order []thumbKey
	// Whatever is claimed is finished, whatever happens, so that no
	// request waits forever.
	defer func() {
		for _, k := range order {
			if c, ok := claimed[k]; ok {
				s.inflight.finish(k, c, Thumbnail{}, errors.New("media: thumbnail generation stopped"))
			}
		}
	}()
	for _, size := range s.thumbnailSizes(m) {
		k := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: size.Method, w: size.Width, h: size.Height}
		if _, dup := claimed[k]; dup || (k.w == m.Width && k.h == m.Height) {
			continue // the original serves requests this large
		}
		if c, mine := s.inflight.claim(k); mine {
			claimed[k] = c
			order = append(order, k)
		}
	}
	if len(order) == 0 {
		return
	}
	// Listed after claiming: a request that stored one of these sizes
	// before the claim is seen here, one after it waited for this worker.
	stored, err := s.store.ListThumbnails(ctx, m.Origin, m.MediaID)
	if err != nil {
		s.log.Warn("listing thumbnails", "media_id", m.MediaID, "err", err)
		return
	}
	for _, t := range stored {
		k := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: t.Method, w: t.Width, h: t.Height}
		if c, ok := claimed[k]; ok {
			s.inflight.finish(k, c, t, nil)
			delete(claimed, k)
		}
	}
	if len(claimed) == 0 {
		return
	}
	slices.SortStableFunc(order, func(a, b thumbKey) int { return b.w*b.h - a.w*a.h })
	src, release, err := s.openSource(ctx, m)
	if err != nil {
		s.undecodable.note(m, err)
		s.log.Info("decoding for thumbnails", "media_id", m.MediaID, "err", err)
		return
	}
	defer release()
	for _, k := range order {
		c, ok := claimed[k]
		if !ok {
			continue
		}
		var t Thumbnail
		err := ctx.Err()
		if err == nil {
			t, err = s.storeThumbnail(ctx, m, src, k.w, k.h, k.method)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("generating thumbnail", "media_id", m.MediaID, "size", fmt.Sprintf("%dx%d", k.w, k.h), "method", k.method, "err", err)
		}
		s.inflight.finish(k, c, t, err)
		delete(claimed, k)
	}
}

// configured reports whether tw×th by method is one of the sizes that
// thumbnail_sizes make of m.
func (s *Service) configured(m Metadata, tw, th int, method string) bool {
	return slices.Contains(s.thumbnailSizes(m), ThumbnailSize{Width: tw, Height: th, Method: method})
}

// nearer waits for a thumbnail being made that serves a request for
// tw×th better than stored (the best stored one, or nil): a request that
// comes while the worker makes the exact size waits for it rather than
// take a larger one. ok is false when there is none, or it failed.
func (s *Service) nearer(ctx context.Context, m Metadata, tw, th int, method string, stored *Thumbnail) (Thumbnail, bool, error) {
	k := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: method, w: tw, h: th}
	c := s.inflight.serving(k, m.Width, m.Height, stored)
	if c == nil {
		return Thumbnail{}, false, nil
	}
	t, err := c.wait(ctx)
	if ctx.Err() != nil {
		return Thumbnail{}, false, ctx.Err()
	}
	// Should that generation have failed or been stopped, the caller
	// falls back on what is stored, or makes it.
	return t, err == nil, nil
}

// onDemand returns the tw×th thumbnail of m when none that would serve the
// request is stored: it waits for one being made (by a worker or another
// request), or makes it. Making a size that thumbnail_sizes do not make
// counts against the requester's rc_media_thumbnail; a configured size is
// part of the upload's cost, made once per media whoever asks, so it is
// not counted.
func (s *Service) onDemand(ctx context.Context, m Metadata, tw, th int, method, requester string) (Thumbnail, error) {
	configured := s.configured(m, tw, th, method)
	// A configured size is waited for (below, when being made) or made
	// exactly; another may take a larger one being made.
	if !configured {
		if t, ok, err := s.nearer(ctx, m, tw, th, method, nil); ok || err != nil {
			return t, err
		}
	}
	if s.undecodable.has(m) {
		return Thumbnail{}, mxhttp.Unknown("Cannot generate thumbnails for the requested content")
	}
	k := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: method, w: tw, h: th}
	if !configured {
		if ok, retry := s.rcThumb.Allow(requester); !ok {
			return Thumbnail{}, mxhttp.LimitExceeded(retry)
		}
	}
	c, mine := s.inflight.claim(k)
	if !mine {
		s.inflight.joined(c)
		return c.wait(ctx)
	}
	// The generation outlives a requester that goes away: others may be
	// waiting for it, and the next request would start it again.
	t, err := s.generateClaimed(context.WithoutCancel(ctx), m, k)
	s.inflight.finish(k, c, t, err)
	return t, err
}

// generateClaimed makes k unless it was stored between the caller's look
// and its claim.
func (s *Service) generateClaimed(ctx context.Context, m Metadata, k thumbKey) (Thumbnail, error) {
	stored, err := s.store.ListThumbnails(ctx, m.Origin, m.MediaID)
	if err != nil {
		return Thumbnail{}, err
	}
	for _, t := range stored {
		if t.Method == k.method && t.Width == k.w && t.Height == k.h {
			return t, nil
		}
	}
	return s.generate(ctx, m, k.w, k.h, k.method)
}

// maxUndecodable bounds the originals remembered as undecodable.
const maxUndecodable = 4096

// undecodableSet remembers originals that failed to decode, so that
// requests for their thumbnails (which, of configured sizes, are not rate
// limited) do not decode them again and again. It is a cache: when full
// it starts afresh.
type undecodableSet struct {
	mu  sync.Mutex
	ids map[[2]string]struct{}
}

func (u *undecodableSet) note(m Metadata, err error) {
	if !errors.Is(err, errUndecodable) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ids == nil || len(u.ids) >= maxUndecodable {
		u.ids = map[[2]string]struct{}{}
	}
	u.ids[[2]string{m.Origin, m.MediaID}] = struct{}{}
}

func (u *undecodableSet) has(m Metadata) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.ids[[2]string{m.Origin, m.MediaID}]
	return ok
}
