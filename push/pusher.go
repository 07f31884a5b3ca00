package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"homeserver/internal/redact"
	"homeserver/mxhttp"
	"homeserver/netguard"
	"homeserver/stream"
)

// NotifyPath is the path every HTTP pusher's URL must end with.
const NotifyPath = "/_matrix/push/v1/notify"

// SetPusherRequest is the body of POST /pushers/set.
type SetPusherRequest struct {
	PushKey           string          `json:"pushkey"`
	Kind              *string         `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

type pusherData struct {
	URL    string `json:"url"`
	Format string `json:"format"`
}

// SetPusher creates, updates (kind set) or deletes (kind null) a pusher for
// the session of deviceID.
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, req SetPusherRequest) error {
	if req.PushKey == "" || req.AppID == "" {
		return mxhttp.MissingParam("pushkey and app_id are required")
	}
	if len(req.AppID) > 64 || len(req.PushKey) > 512 {
		return mxhttp.InvalidParam("app_id or pushkey too long")
	}
	if req.Kind == nil {
		if err := s.store.DeletePusher(ctx, req.AppID, req.PushKey, userID); err != nil {
			return err
		}
		s.pushersChanged(ctx)
		return nil
	}
	if *req.Kind != "http" {
		return mxhttp.InvalidParam("Unsupported pusher kind %q", *req.Kind)
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" || len(req.Data) == 0 {
		return mxhttp.MissingParam("app_display_name, device_display_name, lang and data are required")
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(req.Data, &data); err != nil || data == nil {
		return mxhttp.BadJSON("data must be an object")
	}
	var d pusherData
	if err := json.Unmarshal(req.Data, &d); err != nil {
		return mxhttp.InvalidParam("data.url and data.format must be strings")
	}
	if err := s.pushers.checkURL(d.URL); err != nil {
		return err
	}
	if d.Format != "" && d.Format != "event_id_only" {
		return mxhttp.InvalidParam("Unsupported format %q", d.Format)
	}
	_, err := s.store.PutPusher(ctx, Pusher{
		UserID: userID, AppID: req.AppID, PushKey: req.PushKey, Kind: *req.Kind,
		AppDisplayName: req.AppDisplayName, DeviceDisplayName: req.DeviceDisplayName,
		ProfileTag: req.ProfileTag, Lang: req.Lang, Data: req.Data, PushKeyTS: s.now().UnixMilli(), DeviceID: deviceID,
	}, req.Append)
	if err != nil {
		return err
	}
	s.pushersChanged(ctx)
	return nil
}

// DeleteOtherDevicesPushers deletes the pushers that the user's sessions
// other than keep's set, when a password change ends those sessions: as in
// Synapse, a pusher goes with the access token that created it.
func (s *Service) DeleteOtherDevicesPushers(ctx context.Context, userID, keep string) error {
	if err := s.store.DeletePushersOfOtherDevices(ctx, userID, keep); err != nil {
		return err
	}
	s.pushersChanged(ctx)
	return nil
}

// Pushers lists the user's pushers.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	return s.store.Pushers(ctx, userID)
}

// pushersChanged makes the running set follow the stored pushers, here and
// in whichever process runs them.
func (s *Service) pushersChanged(ctx context.Context) {
	s.pushers.reload(ctx)
	s.hub.Announce(stream.Change{Stream: stream.Pushers})
}

// SetBackoff changes the pushers' retry bounds (for tests).
func (s *Service) SetBackoff(minB, maxB time.Duration) {
	s.pushers.mu.Lock()
	s.pushers.minBackoff, s.pushers.maxBackoff = minB, maxB
	// A pusher waiting out a longer backoff retries now.
	for _, w := range s.pushers.workers {
		stream.Signal(w.kick)
	}
	s.pushers.mu.Unlock()
}

// checkURL checks an HTTP pusher's data.url as Synapse does (an http or
// https URL with the spec's path; the spec's "MUST be HTTPS" is left to
// the gateway's operator), and refuses IP literals that the guard would
// never connect to. Names are checked when they are resolved, at each
// delivery: what they resolve to may change.
func (ps *pusherSet) checkURL(raw string) error {
	if raw == "" {
		return mxhttp.InvalidParam("data.url is required for http pushers")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" || u.Path != NotifyPath {
		return mxhttp.InvalidParam("data.url must be an http(s) URL with the path %s", NotifyPath)
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !ps.guard.Allowed(ip) {
		return mxhttp.InvalidParam("data.url points to an address this server does not connect to")
	}
	return nil
}

// pusherSet runs one sender per pusher.
type pusherSet struct {
	s      *Service
	guard  *netguard.Guard
	client *http.Client

	mu                     sync.Mutex
	minBackoff, maxBackoff time.Duration
	workers                map[int64]*pusherWorker
	running                bool
	// wg counts running workers, stopped ones included until they exit.
	wg sync.WaitGroup
}

type pusherWorker struct {
	p          Pusher
	wake, kick chan struct{}
	stop       chan struct{}
	done       chan struct{}
}

func newPusherSet(s *Service, c Config) *pusherSet {
	if c.Guard == nil {
		c.Guard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist()})
	}
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would connect where the guard cannot check
			DialContext:           c.Guard.DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
		Timeout: 30 * time.Second,
		// A redirect is a failed delivery: following it would let a user
		// aim the server at any URL, with a method of the redirect's
		// choosing.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 10 * time.Minute
	}
	ps := &pusherSet{s: s, guard: c.Guard, client: client, minBackoff: c.MinBackoff, maxBackoff: c.MaxBackoff, workers: map[int64]*pusherWorker{}}
	s.hub.OnChange(func(ch stream.Change) {
		switch ch.Stream {
		case stream.Notifications:
			ps.wakeUsers(ch.Users)
		case stream.Pushers:
			// Pushers set through another process: the running set
			// follows them.
			if ch.Remote {
				go ps.reload(context.Background())
			}
		}
	})
	return ps
}

func (ps *pusherSet) start(ctx context.Context) error {
	ps.mu.Lock()
	ps.running = true
	ps.mu.Unlock()
	return ps.sync(ctx)
}

// sync starts a worker for every stored pusher without one and stops those
// whose pusher is gone.
func (ps *pusherSet) sync(ctx context.Context) error {
	all, err := ps.s.store.AllPushers(ctx)
	if err != nil {
		return err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.running {
		return nil
	}
	keep := map[int64]bool{}
	for _, p := range all {
		keep[p.ID] = true
		if w, ok := ps.workers[p.ID]; ok {
			if string(w.p.Data) == string(p.Data) {
				continue
			}
			ps.stopLocked(p.ID)
		}
		w := &pusherWorker{p: p, wake: make(chan struct{}, 1), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
		ps.workers[p.ID] = w
		ps.wg.Add(1)
		go ps.run(w)
	}
	for id := range ps.workers {
		if !keep[id] {
			ps.stopLocked(id)
		}
	}
	return nil
}

func (ps *pusherSet) reload(ctx context.Context) {
	if err := ps.sync(ctx); err != nil {
		ps.s.log.Warn("reloading pushers", "err", err)
	}
}

func (ps *pusherSet) stopLocked(id int64) {
	w := ps.workers[id]
	delete(ps.workers, id)
	close(w.stop)
	// The worker may be the caller (a rejected pushkey): do not wait.
}

func (ps *pusherSet) stopAll() {
	ps.mu.Lock()
	ps.running = false
	for id := range ps.workers {
		ps.stopLocked(id)
	}
	ps.mu.Unlock()
	ps.wg.Wait()
}

func (ps *pusherSet) wakeUsers(users []string) {
	set := map[string]bool{}
	for _, u := range users {
		set[u] = true
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, w := range ps.workers {
		if set[w.p.UserID] {
			stream.Signal(w.wake)
		}
	}
}

func (ps *pusherSet) backoffs() (time.Duration, time.Duration) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.minBackoff, ps.maxBackoff
}

// readerName names a pusher among the durable readers; it follows the
// notifications stream.
func readerName(id int64) string { return fmt.Sprintf("pusher:%d", id) }

// run sends the pusher's notifications after its durable cursor, one at a
// time and in order, retrying each with exponential backoff until the
// gateway accepts it; the cursor only moves past a delivered one.
func (ps *pusherSet) run(w *pusherWorker) {
	defer ps.wg.Done()
	defer close(w.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-w.done:
		}
	}()
	r := &stream.Reader{
		Name: readerName(w.p.ID),
		Step: func(ctx context.Context) (stream.Progress, error) {
			sent, err := ps.sendNext(ctx, w)
			return stream.Progress{More: sent}, err
		},
		Wake: w.wake, Kick: w.kick, Poll: 30 * time.Second, Backoff: ps.backoffs,
		Log: ps.s.log.With("app_id", w.p.AppID, "user_id", w.p.UserID), Metrics: ps.s.metrics,
	}
	// The set as a whole holds the pushers' lease.
	r.Run(ctx)
}

// sendNext delivers the next notification after the cursor; sent is false
// when there was none.
func (ps *pusherSet) sendNext(ctx context.Context, w *pusherWorker) (bool, error) {
	st := ps.s.store
	cursor, _, err := st.ReaderCursor(ctx, readerName(w.p.ID), stream.Notifications)
	if err != nil {
		return false, err
	}
	ns, err := st.NotificationsAfter(ctx, w.p.UserID, cursor, 1)
	if err != nil || len(ns) == 0 {
		return false, err
	}
	n := ns[0]
	rejected, err := ps.post(ctx, w.p, n)
	if err != nil {
		return false, err
	}
	if rejected {
		ps.s.log.Info("push gateway rejected pushkey; removing pusher", "app_id", w.p.AppID, "user_id", w.p.UserID)
		if err := st.DeletePusher(ctx, w.p.AppID, w.p.PushKey, w.p.UserID); err != nil {
			return false, err
		}
		ps.mu.Lock()
		if cur, ok := ps.workers[w.p.ID]; ok && cur == w {
			ps.stopLocked(w.p.ID)
		}
		ps.mu.Unlock()
		return false, nil
	}
	if err := st.SetReaderCursor(ctx, readerName(w.p.ID), stream.Notifications, n.ID); err != nil {
		return false, err
	}
	return true, nil
}

type gatewayDevice struct {
	AppID     string         `json:"app_id"`
	PushKey   string         `json:"pushkey"`
	PushKeyTS int64          `json:"pushkey_ts,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	Tweaks    map[string]any `json:"tweaks,omitempty"`
}

type gatewayNotification struct {
	EventID  string          `json:"event_id"`
	RoomID   string          `json:"room_id"`
	Type     string          `json:"type,omitempty"`
	Sender   string          `json:"sender,omitempty"`
	Content  json.RawMessage `json:"content,omitempty"`
	Prio     string          `json:"prio"`
	Counts   map[string]int  `json:"counts"`
	Devices  []gatewayDevice `json:"devices"`
	UserIsTg *bool           `json:"user_is_target,omitempty"`
}

// post sends one notification and reports whether the gateway rejected
// the pusher's pushkey.
func (ps *pusherSet) post(ctx context.Context, p Pusher, n Notification) (bool, error) {
	var data map[string]any
	_ = json.Unmarshal(p.Data, &data)
	gwURL, _ := data["url"].(string)
	format, _ := data["format"].(string)
	delete(data, "url")
	tweaks := map[string]any{}
	var actions []any
	_ = json.Unmarshal(n.Actions, &actions)
	for _, a := range actions {
		if m, ok := a.(map[string]any); ok {
			if t, ok := m["set_tweak"].(string); ok {
				v, has := m["value"]
				if !has && t == "highlight" {
					v = true
				}
				tweaks[t] = v
			}
		}
	}
	unread, err := ps.s.store.UnreadTotal(ctx, p.UserID)
	if err != nil {
		return false, err
	}
	gn := gatewayNotification{
		EventID: n.EventID, RoomID: n.RoomID, Prio: "low",
		Counts:  map[string]int{"unread": unread},
		Devices: []gatewayDevice{{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.PushKeyTS / 1000, Data: data, Tweaks: tweaks}},
	}
	if _, ok := tweaks["sound"]; ok || tweaks["highlight"] == true {
		gn.Prio = "high"
	}
	if format != "event_id_only" {
		ev, err := ps.s.store.GetEvent(ctx, n.EventID)
		if err == nil {
			var e struct {
				Type     string          `json:"type"`
				Sender   string          `json:"sender"`
				Content  json.RawMessage `json:"content"`
				StateKey *string         `json:"state_key"`
			}
			if json.Unmarshal(ev.JSON, &e) == nil {
				gn.Type, gn.Sender, gn.Content = e.Type, e.Sender, e.Content
				if e.StateKey != nil && e.Type == "m.room.member" {
					t := *e.StateKey == p.UserID
					gn.UserIsTg = &t
				}
			}
		}
		if gn.Type == "m.room.encrypted" {
			gn.Prio = "high"
		}
	}
	body, err := json.Marshal(map[string]any{"notification": gn})
	if err != nil {
		return false, err
	}
	// Errors quote the gateway's URL, which may hold a credential (some
	// gateways take one in the query): every one that leaves is redacted.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gwURL, bytes.NewReader(body))
	if err != nil {
		return false, redact.Error(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ps.client.Do(req)
	if err != nil {
		return false, redact.Error(err)
	}
	defer resp.Body.Close()
	var out struct {
		Rejected []string `json:"rejected"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20))
	decErr := dec.Decode(&out)
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("push gateway %s answered %s", redact.URL(gwURL), resp.Status)
	}
	if decErr != nil {
		// A 2xx without a body we understand still delivered it.
		return false, nil
	}
	for _, k := range out.Rejected {
		if k == p.PushKey {
			return true, nil
		}
	}
	return false, nil
}
