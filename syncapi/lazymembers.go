package syncapi

import (
	"container/list"
	"sync"
)

// Bounds of what lazyMembers remembers: past them the oldest device is
// forgotten, which costs that device only redundant member events.
const (
	lazyMaxDevices        = 10_000
	lazyMaxPerDevice      = 20_000
	lazyMaxPerDeviceRooms = 2_000
)

// lazyMembers remembers, per device, which member events lazy-loading
// syncs have carried and in the answer up to which events position, so
// that a later incremental sync need not repeat a sender's unchanged
// membership (the spec's "redundant membership events"). A sync from an
// older position than the answer that carried an event (a retried
// request whose answer was lost) does not count it as known. It is only
// an optimisation: a restart, or another process serving the device,
// forgets, and the client gets the redundant events the spec allows.
type lazyMembers struct {
	mu      sync.Mutex
	devices map[string]*list.Element // of *lazyDevice, most recent first
	lru     *list.List
}

type lazyDevice struct {
	key   string
	rooms map[string]map[string]lazySent // room → member → sent
	n     int
}

type lazySent struct {
	eventID string
	at      int64
}

func newLazyMembers() *lazyMembers {
	return &lazyMembers{devices: map[string]*list.Element{}, lru: list.New()}
}

func lazyKey(user, device string) string { return user + "\x00" + device }

// known reports whether the device was sent the member event in an answer
// whose token it has since synced from (at <= since).
func (l *lazyMembers) known(user, device, roomID, member, eventID string, since int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	el, ok := l.devices[lazyKey(user, device)]
	if !ok {
		return false
	}
	s, ok := el.Value.(*lazyDevice).rooms[roomID][member]
	return ok && s.eventID == eventID && s.at <= since
}

// record notes member events (member → event ID) sent to the device in
// the answer up to position at.
func (l *lazyMembers) record(user, device, roomID string, sent map[string]string, at int64) {
	if len(sent) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	key := lazyKey(user, device)
	el, ok := l.devices[key]
	if ok {
		l.lru.MoveToFront(el)
	} else {
		el = l.lru.PushFront(&lazyDevice{key: key, rooms: map[string]map[string]lazySent{}})
		l.devices[key] = el
		if l.lru.Len() > lazyMaxDevices {
			oldest := l.lru.Back()
			l.lru.Remove(oldest)
			delete(l.devices, oldest.Value.(*lazyDevice).key)
		}
	}
	d := el.Value.(*lazyDevice)
	members := d.rooms[roomID]
	if members == nil {
		if len(d.rooms) >= lazyMaxPerDeviceRooms || d.n >= lazyMaxPerDevice {
			// Start over rather than track which entries are oldest.
			d.rooms, d.n = map[string]map[string]lazySent{}, 0
		}
		members = map[string]lazySent{}
		d.rooms[roomID] = members
	}
	for member, eventID := range sent {
		if _, had := members[member]; !had {
			d.n++
		}
		members[member] = lazySent{eventID: eventID, at: at}
	}
}
