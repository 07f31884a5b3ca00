package federation

// End-to-end encryption across servers: the /user/devices, /user/keys/query
// and /user/keys/claim endpoints for local users; the same queries of other
// servers for the e2ee service (e2ee.Remote); m.device_list_update and
// m.signing_key_update, sent when a local user's devices or keys change to
// every server sharing a room with them, and received to tell local users;
// m.direct_to_device both ways (todevice.Remote).

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"homeserver/e2ee"
	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/rooms"
	"homeserver/stream"
	"homeserver/todevice"
)

var (
	_ e2ee.Remote     = (*Service)(nil)
	_ todevice.Remote = (*Service)(nil)
)

// E2EE is the end-to-end encryption service as federation serves and
// feeds it (e2ee.Service).
type E2EE interface {
	// QueryLocalKeys and ClaimLocalKeys answer about local users only.
	QueryLocalKeys(ctx context.Context, want map[string][]string) (*e2ee.QueryResponse, error)
	ClaimLocalKeys(ctx context.Context, want map[string]map[string]string) (*e2ee.ClaimResponse, error)
	// UserKeys is a local user's devices and cross-signing keys.
	UserKeys(ctx context.Context, userID string) (e2ee.UserKeys, error)
	DeviceListMaxPos(ctx context.Context) (int64, error)
	DeviceListChanges(ctx context.Context, from, to int64) ([]string, error)
	// RemoteDeviceListChanged tells local users that another server's
	// user changed their devices or keys.
	RemoteDeviceListChanged(ctx context.Context, userID string) error
}

// DeviceListState is what other servers were last told of a local user's
// devices and cross-signing keys.
type DeviceListState struct {
	UserID string
	// StreamID is the stream_id of the user's last m.device_list_update
	// (0 before the first), the prev_id of the next.
	StreamID int64
	// Devices maps each device announced to a digest of what was said.
	Devices map[string]string
	// SigningKeys is a digest of the cross-signing keys announced.
	SigningKeys string
}

// DeviceListStore keeps what was announced of local users' devices.
type DeviceListStore interface {
	// DeviceListState returns the user's state (zero, with an empty map,
	// when nothing was ever announced).
	DeviceListState(ctx context.Context, userID string) (DeviceListState, error)
	// AnnounceDeviceLists enqueues entries, replaces the states of their
	// users and moves the reader's cursor in stream s to pos, in one
	// transaction.
	AnnounceDeviceLists(ctx context.Context, entries []OutboxEntry, states []DeviceListState, reader string, s stream.Name, pos int64) error
}

// Names and limits.
const (
	deviceListsReader = "federation:device_lists"
	// maxToDeviceEDU is the size past which the messages of one request
	// for one destination are split over several EDUs (one message is
	// never split).
	maxToDeviceEDU = 64 << 10
)

// ---- Inbound endpoints ----

// localUser reads {userId} of a /user/devices request: a local user.
func (s *Service) localUser(r *http.Request) (string, error) {
	userID := mxhttp.PathParam(r, "userId")
	if !rooms.ValidUserID(userID) {
		return "", mxhttp.InvalidParam("Invalid user ID %q", userID)
	}
	if !s.isLocal(userID) {
		return "", mxhttp.InvalidParam("User %s is not hosted on this server", userID)
	}
	return userID, nil
}

type userDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

type userDevicesResponse struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []userDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// userDevices serves GET /user/devices/{userId}: a local user's devices
// with their keys, their cross-signing keys, and the stream_id later
// m.device_list_update EDUs follow on from.
func (s *Service) userDevices(w http.ResponseWriter, r *http.Request) {
	if s.e2ee == nil || s.deviceLists == nil {
		s.fail(w, r, mxhttp.Unrecognized("Unrecognized request"))
		return
	}
	userID, err := s.localUser(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	// The state first: the devices read after it are at least as new, and
	// an update that follows on from it is applied again harmlessly.
	state, err := s.deviceLists.DeviceListState(ctx, userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	keys, err := s.e2ee.UserKeys(ctx, userID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	resp := userDevicesResponse{UserID: userID, StreamID: state.StreamID, Devices: []userDevice{},
		MasterKey: keys.MasterKey, SelfSigningKey: keys.SelfSigningKey}
	for _, d := range keys.Devices {
		resp.Devices = append(resp.Devices, userDevice{DeviceID: d.DeviceID, Keys: d.Keys, DisplayName: d.DisplayName})
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

type keysQueryRequest struct {
	DeviceKeys *map[string][]string `json:"device_keys"`
}

type keysQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
}

// userKeysQuery serves POST /user/keys/query: the keys of the local users
// asked for; others are left out.
func (s *Service) userKeysQuery(w http.ResponseWriter, r *http.Request) {
	if s.e2ee == nil {
		s.fail(w, r, mxhttp.Unrecognized("Unrecognized request"))
		return
	}
	var req keysQueryRequest
	if err := body(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		s.fail(w, r, mxhttp.BadJSON("device_keys is required"))
		return
	}
	resp, err := s.e2ee.QueryLocalKeys(r.Context(), *req.DeviceKeys)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, keysQueryResponse{DeviceKeys: resp.DeviceKeys, MasterKeys: resp.MasterKeys, SelfSigningKeys: resp.SelfSigningKeys})
}

type keysClaimRequest struct {
	OneTimeKeys *map[string]map[string]string `json:"one_time_keys"`
}

type keysClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// userKeysClaim serves POST /user/keys/claim: one key of each local
// device asked for, each one-time key handed out once.
func (s *Service) userKeysClaim(w http.ResponseWriter, r *http.Request) {
	if s.e2ee == nil {
		s.fail(w, r, mxhttp.Unrecognized("Unrecognized request"))
		return
	}
	var req keysClaimRequest
	if err := body(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		s.fail(w, r, mxhttp.BadJSON("one_time_keys is required"))
		return
	}
	resp, err := s.e2ee.ClaimLocalKeys(r.Context(), *req.OneTimeKeys)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, keysClaimResponse{OneTimeKeys: resp.OneTimeKeys})
}

// ---- Outbound queries (e2ee.Remote) ----

// keyQueryError makes a server's error answer an *mxhttp.Error (its status
// and error, for the client's failures), wrapped.
func keyQueryError(server string, err error) error {
	var he *transport.HTTPError
	if errors.As(err, &he) {
		msg := he.Message
		if msg == "" {
			msg = http.StatusText(he.Status)
		}
		return fmt.Errorf("%s: %w", server, &mxhttp.Error{Status: he.Status, Code: he.Code, Message: msg})
	}
	return fmt.Errorf("%s: %w", server, err)
}

// QueryRemoteKeys asks server for the keys of its users (/user/keys/query)
// and keeps, of the answer, what it may speak for: the users asked, each
// device object naming its user and device, each cross-signing key its
// user.
func (s *Service) QueryRemoteKeys(ctx context.Context, server string, want map[string][]string) (*e2ee.RemoteKeys, error) {
	req := make(map[string][]string, len(want))
	for user, devices := range want {
		if serverOf(user) != server {
			continue
		}
		if devices == nil {
			devices = []string{}
		}
		req[user] = devices
	}
	var resp keysQueryResponse
	if err := s.client.Do(ctx, "POST", server, "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": req}, &resp); err != nil {
		return nil, keyQueryError(server, err)
	}
	out := &e2ee.RemoteKeys{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	for user := range req {
		if devices, ok := resp.DeviceKeys[user]; ok {
			kept := map[string]json.RawMessage{}
			for id, obj := range devices {
				if ownedBy(obj, user, id) {
					kept[id] = obj
				}
			}
			out.DeviceKeys[user] = kept
		}
		if k, ok := resp.MasterKeys[user]; ok && ownedBy(k, user, "") {
			out.MasterKeys[user] = k
		}
		if k, ok := resp.SelfSigningKeys[user]; ok && ownedBy(k, user, "") {
			out.SelfSigningKeys[user] = k
		}
	}
	return out, nil
}

// ownedBy reports whether raw is a key object of user (and of device, when
// given).
func ownedBy(raw json.RawMessage, user, device string) bool {
	var o struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if json.Unmarshal(raw, &o) != nil || o.UserID != user {
		return false
	}
	return device == "" || o.DeviceID == device
}

// ClaimRemoteKeys claims keys of server's users' devices
// (/user/keys/claim), keeping only the devices asked for.
func (s *Service) ClaimRemoteKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	req := make(map[string]map[string]string, len(want))
	for user, devices := range want {
		if serverOf(user) == server {
			req[user] = devices
		}
	}
	var resp keysClaimResponse
	if err := s.client.Do(ctx, "POST", server, "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": req}, &resp); err != nil {
		return nil, keyQueryError(server, err)
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for user, devices := range req {
		for device := range devices {
			if k := resp.OneTimeKeys[user][device]; len(k) > 0 {
				if out[user] == nil {
					out[user] = map[string]map[string]json.RawMessage{}
				}
				out[user][device] = k
			}
		}
	}
	return out, nil
}

// ---- To-device messages ----

// QueueToDevice queues m.direct_to_device EDUs for destination's users
// (todevice.Remote): one, or several of at most about 64 KiB when there
// is much to say, each with its own message ID.
func (s *Service) QueueToDevice(ctx context.Context, destination, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	if destination == s.cfg.ServerName || !s.isLocal(sender) {
		return fmt.Errorf("federation: to-device messages from %s to %s are not for federation", sender, destination)
	}
	chunks := splitMessages(messages)
	entries := make([]OutboxEntry, 0, len(chunks))
	for i, chunk := range chunks {
		id := messageID
		if len(chunks) > 1 {
			id += "." + strconv.Itoa(i)
		}
		raw, err := json.Marshal(map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
			"sender": sender, "type": eventType, "message_id": id, "messages": chunk,
		}})
		if err != nil {
			return err
		}
		entries = append(entries, OutboxEntry{Destination: destination, EDU: raw})
	}
	if len(entries) == 0 {
		return nil
	}
	if err := s.store.Enqueue(ctx, entries, "", "", 0); err != nil {
		return err
	}
	s.sender.wake(destination)
	return nil
}

// splitMessages splits messages into groups of at most about
// maxToDeviceEDU bytes, in a stable order.
func splitMessages(messages map[string]map[string]json.RawMessage) []map[string]map[string]json.RawMessage {
	var out []map[string]map[string]json.RawMessage
	var cur map[string]map[string]json.RawMessage
	size := 0
	for _, user := range keys(setOf(messages)) {
		devices := messages[user]
		for _, device := range keys(setOf(devices)) {
			content := devices[device]
			n := len(user) + len(device) + len(content) + 16
			if cur == nil || (size > 0 && size+n > maxToDeviceEDU) {
				cur = map[string]map[string]json.RawMessage{}
				out = append(out, cur)
				size = 0
			}
			if cur[user] == nil {
				cur[user] = map[string]json.RawMessage{}
			}
			cur[user][device] = content
			size += n
		}
	}
	return out
}

func setOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// receiveToDevice delivers an m.direct_to_device EDU to local devices.
func (s *Service) receiveToDevice(ctx context.Context, origin string, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("m.direct_to_device: %w", err)
	}
	if serverOf(c.Sender) != origin || !rooms.ValidUserID(c.Sender) {
		return fmt.Errorf("m.direct_to_device: sender %q is not a user of %s", c.Sender, origin)
	}
	if s.edus.ToDevice == nil {
		return nil
	}
	local := map[string]map[string]json.RawMessage{}
	for user, devices := range c.Messages {
		if s.isLocal(user) {
			local[user] = devices
		}
	}
	if len(local) == 0 {
		return nil
	}
	return s.edus.ToDevice(ctx, c.Sender, c.Type, c.MessageID, local)
}

// ---- Device lists ----

// receiveDeviceListEDU takes an m.device_list_update or
// m.signing_key_update: the user's devices or keys changed, which local
// users sharing a room with them learn in /sync.
func (s *Service) receiveDeviceListEDU(ctx context.Context, origin, eduType string, content json.RawMessage) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return fmt.Errorf("%s: %w", eduType, err)
	}
	if serverOf(c.UserID) != origin || !rooms.ValidUserID(c.UserID) {
		return fmt.Errorf("%s: user %q is not a user of %s", eduType, c.UserID, origin)
	}
	if s.e2ee == nil {
		return nil
	}
	// Updates about users no one here shares a room with are nobody's
	// business (and would let any server fill the stream).
	if ok, err := s.sharesRoomWithLocalUser(ctx, c.UserID); err != nil || !ok {
		return err
	}
	return s.e2ee.RemoteDeviceListChanged(ctx, c.UserID)
}

// sharesRoomWithLocalUser reports whether a remote user is joined to a
// room a local user is joined to.
func (s *Service) sharesRoomWithLocalUser(ctx context.Context, userID string) (bool, error) {
	joined, err := s.rooms.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return false, err
	}
	for _, roomID := range joined {
		in, err := s.rooms.InRoom(ctx, roomID)
		if err != nil {
			return false, err
		}
		if in {
			return true, nil
		}
	}
	return false, nil
}

// serversSharingRoom lists the other servers with a user joined to one of
// the local user's rooms.
func (s *Service) serversSharingRoom(ctx context.Context, userID string) ([]string, error) {
	joined, err := s.rooms.RoomsWithMembership(ctx, userID, "join")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, roomID := range joined {
		servers, err := s.rooms.JoinedServers(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, d := range servers {
			if d != s.cfg.ServerName && d != "" {
				seen[d] = true
			}
		}
	}
	return keys(seen), nil
}

// deviceListsReaderFor is the sender's reader of the device-list stream.
func (q *sender) deviceListsReaderFor() *stream.Reader {
	return &stream.Reader{Name: deviceListsReader, Step: q.deviceListsStep, Wake: q.s.hub.Wake(stream.DeviceLists),
		Log: q.s.log, Metrics: q.s.metrics, Poll: time.Minute}
}

// deviceListsStep reads the local users whose devices or keys changed and
// tells every server sharing a room with them what changed since it was
// last told: m.device_list_update for each new, changed or deleted
// device, m.signing_key_update for new cross-signing keys.
func (q *sender) deviceListsStep(ctx context.Context) (stream.Progress, error) {
	s := q.s
	if s.e2ee == nil || s.deviceLists == nil {
		return stream.Progress{}, nil
	}
	from, err := q.cursor(ctx, deviceListsReader, stream.DeviceLists, s.e2ee.DeviceListMaxPos)
	if err != nil {
		return stream.Progress{}, err
	}
	to, err := s.e2ee.DeviceListMaxPos(ctx)
	if err != nil || to <= from {
		return stream.Progress{Pos: from}, err
	}
	users, err := s.e2ee.DeviceListChanges(ctx, from, to)
	if err != nil {
		return stream.Progress{}, err
	}
	var entries []OutboxEntry
	var states []DeviceListState
	woken := map[string]bool{}
	for _, user := range users {
		if !s.isLocal(user) {
			continue // its own server tells
		}
		edus, state, changed, err := s.deviceListUpdates(ctx, user, to)
		if err != nil {
			return stream.Progress{}, err
		}
		if !changed {
			continue
		}
		states = append(states, state)
		if len(edus) == 0 {
			continue
		}
		servers, err := s.serversSharingRoom(ctx, user)
		if err != nil {
			return stream.Progress{}, err
		}
		for _, d := range servers {
			for _, e := range edus {
				entries = append(entries, OutboxEntry{Destination: d, EDU: e})
			}
			woken[d] = true
		}
	}
	if err := s.deviceLists.AnnounceDeviceLists(ctx, entries, states, deviceListsReader, stream.DeviceLists, to); err != nil {
		return stream.Progress{}, err
	}
	q.wake(keys(woken)...)
	return stream.Progress{Pos: to}, nil
}

// deviceListUpdates compares a local user's devices and keys with what was
// last announced and returns the EDUs that tell the difference, the new
// state, and whether anything changed. Device updates carry streamID and,
// as prev_id, the stream_id of the user's last update.
func (s *Service) deviceListUpdates(ctx context.Context, userID string, streamID int64) ([][]byte, DeviceListState, bool, error) {
	prev, err := s.deviceLists.DeviceListState(ctx, userID)
	if err != nil {
		return nil, DeviceListState{}, false, err
	}
	uk, err := s.e2ee.UserKeys(ctx, userID)
	if err != nil {
		return nil, DeviceListState{}, false, err
	}
	next := DeviceListState{UserID: userID, StreamID: prev.StreamID, Devices: map[string]string{}}
	prevIDs := []int64{}
	if prev.StreamID > 0 {
		prevIDs = []int64{prev.StreamID}
	}
	var edus [][]byte
	add := func(typ string, content map[string]any) error {
		raw, err := json.Marshal(map[string]any{"edu_type": typ, "content": content})
		if err != nil {
			return err
		}
		edus = append(edus, raw)
		return nil
	}
	for _, d := range uk.Devices {
		h := digest(d.Keys, d.DisplayName)
		next.Devices[d.DeviceID] = h
		if prev.Devices[d.DeviceID] == h {
			continue
		}
		c := map[string]any{"user_id": userID, "device_id": d.DeviceID, "stream_id": streamID, "prev_id": prevIDs, "deleted": false, "keys": d.Keys}
		if d.DisplayName != "" {
			c["device_display_name"] = d.DisplayName
		}
		if err := add("m.device_list_update", c); err != nil {
			return nil, DeviceListState{}, false, err
		}
	}
	for _, id := range keys(setOf(prev.Devices)) {
		if _, ok := next.Devices[id]; ok {
			continue
		}
		c := map[string]any{"user_id": userID, "device_id": id, "stream_id": streamID, "prev_id": prevIDs, "deleted": true}
		if err := add("m.device_list_update", c); err != nil {
			return nil, DeviceListState{}, false, err
		}
	}
	if len(edus) > 0 {
		next.StreamID = streamID
	}
	next.SigningKeys = digest(uk.MasterKey, string(uk.SelfSigningKey))
	if uk.MasterKey == nil && uk.SelfSigningKey == nil {
		next.SigningKeys = ""
	}
	if next.SigningKeys != prev.SigningKeys && next.SigningKeys != "" {
		c := map[string]any{"user_id": userID}
		if uk.MasterKey != nil {
			c["master_key"] = uk.MasterKey
		}
		if uk.SelfSigningKey != nil {
			c["self_signing_key"] = uk.SelfSigningKey
		}
		if err := add("m.signing_key_update", c); err != nil {
			return nil, DeviceListState{}, false, err
		}
	}
	changed := len(edus) > 0 || next.SigningKeys != prev.SigningKeys
	return edus, next, changed, nil
}

// digest is a short fingerprint of what was announced.
func digest(raw json.RawMessage, extra string) string {
	h := sha256.New()
	h.Write(raw)
	h.Write([]byte{0})
	h.Write([]byte(extra))
	return base64.RawStdEncoding.EncodeToString(h.Sum(nil))
}
