package appservice

import (
	"context"
	"encoding/json"
	"sort"

	"homeserver/e2ee"
)

// EphemeralCursors are where a service is in the streams other than events
// (typing aside, which lives in memory). They are persisted with each
// transaction that carries what they cover: the transaction itself then
// holds that data until the service takes it, across restarts.
type EphemeralCursors struct {
	Receipts, Presence, ToDevice, DeviceLists, OTK int64
}

// KeySource is the keys service, for device lists and key counts.
type KeySource interface {
	DeviceListMaxPos(ctx context.Context) (int64, error)
	DeviceListChanges(ctx context.Context, from, to int64) ([]string, error)
	OTKMaxPos(ctx context.Context) (int64, error)
	OTKChanges(ctx context.Context, from, to int64) ([]e2ee.DeviceRef, error)
	Counts(ctx context.Context, userID, deviceID string) (e2ee.Counts, error)
}

// toDeviceScan is how many to-device messages (of any recipient) one pass
// reads.
const toDeviceScan = 2000

// e2eePart is what a transaction carries for an encrypting service: the
// to-device messages of its users' devices (MSC2409), and the device lists
// and key counts of MSC3202.
type e2eePart struct {
	toDevice  []json.RawMessage
	changed   []string
	otkCounts map[string]map[string]map[string]int
	fallback  map[string]map[string][]string
	next      EphemeralCursors
	delivered []e2ee.DeviceRef
	hasCounts bool
}

func (p *e2eePart) empty() bool {
	return len(p.toDevice) == 0 && len(p.changed) == 0 && !p.hasCounts
}

// e2ee gathers what moved in the encryption streams since the service's
// cursors into p, whose next cursors it moves.
func (w *worker) e2ee(ctx context.Context, p *e2eePart) error {
	if w.reg.Ephemeral() {
		if err := w.toDeviceMessages(ctx, p); err != nil {
			return err
		}
	}
	keys := w.d.eph.Keys
	if !w.reg.DeviceData() || keys == nil {
		return nil
	}
	to, err := keys.DeviceListMaxPos(ctx)
	if err != nil {
		return err
	}
	if to > w.eph.DeviceLists {
		users, err := keys.DeviceListChanges(ctx, w.eph.DeviceLists, to)
		if err != nil {
			return err
		}
		for _, u := range users {
			ok, err := w.sharesRoomWithNamespace(ctx, u)
			if err != nil {
				return err
			}
			if ok {
				p.changed = append(p.changed, u)
			}
		}
		p.next.DeviceLists = to
	}
	to, err = keys.OTKMaxPos(ctx)
	if err != nil {
		return err
	}
	if to > w.eph.OTK {
		refs, err := keys.OTKChanges(ctx, w.eph.OTK, to)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if !w.interestedInUser(r.UserID) {
				continue
			}
			c, err := keys.Counts(ctx, r.UserID, r.DeviceID)
			if err != nil {
				return err
			}
			if p.otkCounts == nil {
				p.otkCounts = map[string]map[string]map[string]int{}
				p.fallback = map[string]map[string][]string{}
			}
			if p.otkCounts[r.UserID] == nil {
				p.otkCounts[r.UserID] = map[string]map[string]int{}
				p.fallback[r.UserID] = map[string][]string{}
			}
			p.otkCounts[r.UserID][r.DeviceID] = c.OneTimeKeys
			p.fallback[r.UserID][r.DeviceID] = c.FallbackKeys
			p.hasCounts = true
		}
		p.next.OTK = to
	}
	return nil
}

// toDeviceMessages reads the to-device messages after the cursor and keeps
// those for the service's users.
func (w *worker) toDeviceMessages(ctx context.Context, p *e2eePart) error {
	to, err := w.d.store.ToDeviceMaxPos(ctx)
	if err != nil {
		return err
	}
	if to <= w.eph.ToDevice {
		return nil
	}
	msgs, err := w.d.store.ToDeviceAfter(ctx, w.eph.ToDevice, to, toDeviceScan)
	if err != nil {
		return err
	}
	next := to
	if len(msgs) == toDeviceScan {
		// Stop before the last position read: its messages may go on
		// beyond the batch. One position fills the batch alone only when
		// one request addressed that many devices: then read it whole.
		last := msgs[len(msgs)-1].Pos
		if msgs[0].Pos == last {
			if msgs, err = w.d.store.ToDeviceAt(ctx, last); err != nil {
				return err
			}
			next = last
		} else {
			i := sort.Search(len(msgs), func(i int) bool { return msgs[i].Pos == last })
			msgs, next = msgs[:i], last-1
		}
	}
	seen := map[e2ee.DeviceRef]bool{}
	for _, m := range msgs {
		if !w.interestedInUser(m.UserID) {
			continue
		}
		ev, err := json.Marshal(struct {
			Sender     string          `json:"sender"`
			Type       string          `json:"type"`
			Content    json.RawMessage `json:"content"`
			ToUserID   string          `json:"to_user_id"`
			ToDeviceID string          `json:"to_device_id"`
		}{m.Sender, m.Type, m.Content, m.UserID, m.DeviceID})
		if err != nil {
			return err
		}
		p.toDevice = append(p.toDevice, ev)
		ref := e2ee.DeviceRef{UserID: m.UserID, DeviceID: m.DeviceID}
		if !seen[ref] {
			seen[ref] = true
			p.delivered = append(p.delivered, ref)
		}
	}
	p.next.ToDevice = next
	return nil
}

// sharesRoomWithNamespace reports whether a user's device list concerns the
// service: one of its users, or someone in a room with one of them.
func (w *worker) sharesRoomWithNamespace(ctx context.Context, userID string) (bool, error) {
	if w.interestedInUser(userID) {
		return true, nil
	}
	joined, err := w.d.store.RoomsOf(ctx, userID, "join")
	if err != nil {
		return false, err
	}
	for _, roomID := range joined {
		ri, err := w.room(ctx, roomID)
		if err != nil {
			return false, err
		}
		if len(ri.members) > 0 {
			return true, nil
		}
	}
	return false, nil
}

// txnDeviceLists is device_lists in a transaction.
type txnDeviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// fillBody adds the part to a transaction body, under the stable names and
// the unstable ones services written before them read.
func (p *e2eePart) fillBody(b *txnBody) {
	if len(p.toDevice) > 0 {
		b.ToDevice, b.MSC2409ToDevice = p.toDevice, p.toDevice
	}
	if len(p.changed) > 0 {
		dl := &txnDeviceLists{Changed: p.changed, Left: []string{}}
		b.DeviceLists, b.MSC3202DeviceLists = dl, dl
	}
	if p.hasCounts {
		b.OTKCounts, b.MSC3202OTKCounts = p.otkCounts, p.otkCounts
		b.FallbackKeys, b.MSC3202FallbackKeys = p.fallback, p.fallback
	}
}
