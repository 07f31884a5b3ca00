package e2ee

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"homeserver/mxhttp"
)

// QueryResponse is the answer of /keys/query.
type QueryResponse struct {
	Failures        map[string]any                        `json:"failures"`
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
}

// unreachable is the failure recorded for a server the query cannot reach.
func unreachable() map[string]any {
	return map[string]any{"status": 503, "message": "Federation is not available on this server"}
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// QueryKeys returns the device keys and cross-signing keys of the users
// asked for (all their devices when the list is empty), with the
// signatures the requester may see. Users of other servers are asked of
// their servers, all at once, for at most timeout (DefaultRemoteTimeout
// when not positive); those that cannot answer are listed in failures.
func (s *Service) QueryKeys(ctx context.Context, requester string, want map[string][]string, timeout time.Duration) (*QueryResponse, error) {
	if len(want) > MaxQueryUsers {
		return nil, mxhttp.TooLarge("At most %d users may be queried at once", MaxQueryUsers)
	}
	resp := newQueryResponse()
	remote := map[string]map[string][]string{}
	for _, user := range sortedKeys(want) {
		if !strings.HasPrefix(user, "@") || serverOf(user) == "" {
			return nil, mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		if !s.IsLocal(user) {
			server := serverOf(user)
			if s.remote == nil {
				resp.Failures[server] = unreachable()
				continue
			}
			if remote[server] == nil {
				remote[server] = map[string][]string{}
			}
			remote[server][user] = want[user]
			continue
		}
		if err := s.addLocalKeys(ctx, resp, requester, user, want[user]); err != nil {
			return nil, err
		}
	}
	s.queryRemote(ctx, resp, remote, timeout)
	return resp, nil
}

// QueryLocalKeys answers another server's /user/keys/query: the keys of
// the local users asked for, with the signatures anyone may see. Users of
// other servers, or invalid user IDs, are left out.
func (s *Service) QueryLocalKeys(ctx context.Context, want map[string][]string) (*QueryResponse, error) {
	if len(want) > MaxQueryUsers {
		return nil, mxhttp.TooLarge("At most %d users may be queried at once", MaxQueryUsers)
	}
	resp := newQueryResponse()
	for _, user := range sortedKeys(want) {
		if !strings.HasPrefix(user, "@") || !s.IsLocal(user) {
			continue
		}
		if err := s.addLocalKeys(ctx, resp, "", user, want[user]); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func newQueryResponse() *QueryResponse {
	return &QueryResponse{
		Failures: map[string]any{}, DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
}

// addLocalKeys adds a local user's keys to a query's answer, device
// objects with their display names in unsigned.
func (s *Service) addLocalKeys(ctx context.Context, resp *QueryResponse, requester, user string, deviceIDs []string) error {
	uk, userSigning, err := s.localKeys(ctx, requester, user, deviceIDs)
	if err != nil {
		return err
	}
	out := make(map[string]json.RawMessage, len(uk.Devices))
	for _, d := range uk.Devices {
		obj := d.Keys
		if d.DisplayName != "" {
			if obj, err = withSignatures(obj, nil, map[string]any{"device_display_name": d.DisplayName}); err != nil {
				return err
			}
		}
		out[d.DeviceID] = obj
	}
	resp.DeviceKeys[user] = out
	if uk.MasterKey != nil {
		resp.MasterKeys[user] = uk.MasterKey
	}
	if uk.SelfSigningKey != nil {
		resp.SelfSigningKeys[user] = uk.SelfSigningKey
	}
	if userSigning != nil {
		resp.UserSigningKeys[user] = userSigning
	}
	return nil
}

// UserKeys returns what other servers may know of a local user's keys:
// every device with keys, and the master and self-signing keys, with the
// signatures anyone may see.
func (s *Service) UserKeys(ctx context.Context, userID string) (UserKeys, error) {
	uk, _, err := s.localKeys(ctx, "", userID, nil)
	return uk, err
}

// localKeys reads a local user's device keys (the wanted devices, all when
// the list is empty) and cross-signing keys, with the signatures viewer
// may see ("" for no one in particular), and the user-signing key when the
// viewer is the user.
func (s *Service) localKeys(ctx context.Context, viewer, user string, deviceIDs []string) (UserKeys, json.RawMessage, error) {
	var uk UserKeys
	devices, err := s.store.DeviceKeys(ctx, user, deviceIDs)
	if err != nil {
		return uk, nil, err
	}
	cs, err := s.store.CrossSigningKeys(ctx, user)
	if err != nil {
		return uk, nil, err
	}
	targets := make([]string, 0, len(devices)+1)
	for _, d := range devices {
		targets = append(targets, d.DeviceID)
	}
	master, hasMaster := cs[Master]
	if hasMaster {
		targets = append(targets, master.PublicKey)
	}
	sigs, err := s.store.Signatures(ctx, user, targets)
	if err != nil {
		return uk, nil, err
	}
	byTarget := map[string][]Signature{}
	for _, sg := range sigs {
		byTarget[sg.TargetKey] = append(byTarget[sg.TargetKey], sg)
	}
	uk.Devices = make([]Device, 0, len(devices))
	for _, d := range devices {
		// Only the owner's own (self-signing) signatures of a device
		// are anyone's business.
		var own []Signature
		for _, sg := range byTarget[d.DeviceID] {
			if sg.SignerUser == user {
				own = append(own, sg)
			}
		}
		obj, err := withSignatures(d.JSON, own, nil)
		if err != nil {
			return uk, nil, err
		}
		uk.Devices = append(uk.Devices, Device{DeviceID: d.DeviceID, Keys: obj, DisplayName: d.DisplayName})
	}
	if hasMaster {
		// Signatures of the master key by the owner's devices, and by
		// the viewer's user-signing key; not other users' opinions.
		var visible []Signature
		for _, sg := range byTarget[master.PublicKey] {
			if sg.SignerUser == user || (viewer != "" && sg.SignerUser == viewer) {
				visible = append(visible, sg)
			}
		}
		if uk.MasterKey, err = withSignatures(master.JSON, visible, nil); err != nil {
			return uk, nil, err
		}
	}
	if k, ok := cs[SelfSigning]; ok {
		uk.SelfSigningKey = k.JSON
	}
	var userSigning json.RawMessage
	if k, ok := cs[UserSigning]; ok && viewer != "" && user == viewer {
		userSigning = k.JSON
	}
	return uk, userSigning, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// withSignatures adds stored signatures (and unsigned data) to a signed
// object.
func withSignatures(raw json.RawMessage, sigs []Signature, unsigned map[string]any) (json.RawMessage, error) {
	if len(sigs) == 0 && unsigned == nil {
		return raw, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	all := map[string]map[string]string{}
	if s, ok := obj["signatures"]; ok {
		_ = json.Unmarshal(s, &all) // stored objects were checked on upload
	}
	for _, sg := range sigs {
		if all[sg.SignerUser] == nil {
			all[sg.SignerUser] = map[string]string{}
		}
		all[sg.SignerUser][sg.SignerKeyID] = sg.Signature
	}
	var err error
	if obj["signatures"], err = json.Marshal(all); err != nil {
		return nil, err
	}
	if unsigned != nil {
		if obj["unsigned"], err = json.Marshal(unsigned); err != nil {
			return nil, err
		}
	}
	return json.Marshal(obj)
}

// ClaimResponse is the answer of /keys/claim.
type ClaimResponse struct {
	Failures    map[string]any                                   `json:"failures"`
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// ClaimKeys hands out one key per device asked for: a one-time key, each
// to one claimer only, or the device's fallback key when it has none left.
// Keys of other servers' users are claimed from their servers, all at
// once, for at most timeout (DefaultRemoteTimeout when not positive).
func (s *Service) ClaimKeys(ctx context.Context, want map[string]map[string]string, timeout time.Duration) (*ClaimResponse, error) {
	resp := newClaimResponse()
	local := map[string]map[string]string{}
	remote := map[string]map[string]map[string]string{}
	n := 0
	for _, user := range sortedKeys(want) {
		devices := want[user]
		if !strings.HasPrefix(user, "@") || serverOf(user) == "" {
			return nil, mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		for device, alg := range devices {
			if alg == "" || device == "" {
				return nil, mxhttp.InvalidParam("Claims need a device ID and an algorithm")
			}
		}
		if n += len(devices); n > MaxQueryUsers {
			return nil, mxhttp.TooLarge("At most %d keys may be claimed at once", MaxQueryUsers)
		}
		if s.IsLocal(user) {
			local[user] = devices
			continue
		}
		server := serverOf(user)
		if s.remote == nil {
			resp.Failures[server] = unreachable()
			continue
		}
		if remote[server] == nil {
			remote[server] = map[string]map[string]string{}
		}
		remote[server][user] = devices
	}
	if err := s.claimLocal(ctx, resp, local); err != nil {
		return nil, err
	}
	s.claimRemote(ctx, resp, remote, timeout)
	return resp, nil
}

// ClaimLocalKeys answers another server's /user/keys/claim: keys of the
// local users' devices asked for. Users of other servers are left out.
func (s *Service) ClaimLocalKeys(ctx context.Context, want map[string]map[string]string) (*ClaimResponse, error) {
	local := map[string]map[string]string{}
	n := 0
	for user, devices := range want {
		if !strings.HasPrefix(user, "@") || !s.IsLocal(user) {
			continue
		}
		for device, alg := range devices {
			if alg == "" || device == "" {
				return nil, mxhttp.InvalidParam("Claims need a device ID and an algorithm")
			}
		}
		if n += len(devices); n > MaxQueryUsers {
			return nil, mxhttp.TooLarge("At most %d keys may be claimed at once", MaxQueryUsers)
		}
		local[user] = devices
	}
	resp := newClaimResponse()
	if err := s.claimLocal(ctx, resp, local); err != nil {
		return nil, err
	}
	return resp, nil
}

func newClaimResponse() *ClaimResponse {
	return &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
}

// claimLocal claims keys of local users' devices (checked by the caller)
// into resp.
func (s *Service) claimLocal(ctx context.Context, resp *ClaimResponse, want map[string]map[string]string) error {
	var reqs []ClaimRequest
	for user, devices := range want {
		for device, alg := range devices {
			reqs = append(reqs, ClaimRequest{UserID: user, DeviceID: device, Algorithm: alg})
		}
	}
	if len(reqs) == 0 {
		return nil
	}
	// A stable order keeps concurrent claims from locking rows in
	// opposite orders.
	sort.Slice(reqs, func(i, j int) bool {
		if reqs[i].UserID != reqs[j].UserID {
			return reqs[i].UserID < reqs[j].UserID
		}
		return reqs[i].DeviceID < reqs[j].DeviceID
	})
	claimed, err := s.store.ClaimKeys(ctx, reqs)
	if err != nil {
		return err
	}
	for _, c := range claimed {
		byDevice := resp.OneTimeKeys[c.UserID]
		if byDevice == nil {
			byDevice = map[string]map[string]json.RawMessage{}
			resp.OneTimeKeys[c.UserID] = byDevice
		}
		byDevice[c.DeviceID] = map[string]json.RawMessage{c.Key.Algorithm + ":" + c.Key.KeyID: c.Key.JSON}
		s.keysChanged(DeviceRef{UserID: c.UserID, DeviceID: c.DeviceID})
	}
	return nil
}
