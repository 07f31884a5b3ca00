package e2ee

import (
	"context"
	"encoding/json"
	"sort"
	"strings"

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
// signatures the requester may see.
func (s *Service) QueryKeys(ctx context.Context, requester string, want map[string][]string) (*QueryResponse, error) {
	if len(want) > MaxQueryUsers {
		return nil, mxhttp.TooLarge("At most %d users may be queried at once", MaxQueryUsers)
	}
	resp := &QueryResponse{
		Failures: map[string]any{}, DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{},
		UserSigningKeys: map[string]json.RawMessage{},
	}
	users := make([]string, 0, len(want))
	for u := range want {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, user := range users {
		if !strings.HasPrefix(user, "@") || serverOf(user) == "" {
			return nil, mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		if !s.IsLocal(user) {
			resp.Failures[serverOf(user)] = unreachable()
			continue
		}
		devices, err := s.store.DeviceKeys(ctx, user, want[user])
		if err != nil {
			return nil, err
		}
		cs, err := s.store.CrossSigningKeys(ctx, user)
		if err != nil {
			return nil, err
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
			return nil, err
		}
		byTarget := map[string][]Signature{}
		for _, sg := range sigs {
			byTarget[sg.TargetKey] = append(byTarget[sg.TargetKey], sg)
		}
		out := map[string]json.RawMessage{}
		for _, d := range devices {
			// Only the owner's own (self-signing) signatures of a device
			// are anyone's business.
			var own []Signature
			for _, sg := range byTarget[d.DeviceID] {
				if sg.SignerUser == user {
					own = append(own, sg)
				}
			}
			var unsigned map[string]any
			if d.DisplayName != "" {
				unsigned = map[string]any{"device_display_name": d.DisplayName}
			}
			obj, err := withSignatures(d.JSON, own, unsigned)
			if err != nil {
				return nil, err
			}
			out[d.DeviceID] = obj
		}
		resp.DeviceKeys[user] = out
		if hasMaster {
			// Signatures of the master key by the owner's devices, and by
			// the requester's user-signing key; not other users' opinions.
			var visible []Signature
			for _, sg := range byTarget[master.PublicKey] {
				if sg.SignerUser == user || sg.SignerUser == requester {
					visible = append(visible, sg)
				}
			}
			obj, err := withSignatures(master.JSON, visible, nil)
			if err != nil {
				return nil, err
			}
			resp.MasterKeys[user] = obj
		}
		if k, ok := cs[SelfSigning]; ok {
			resp.SelfSigningKeys[user] = k.JSON
		}
		if k, ok := cs[UserSigning]; ok && user == requester {
			resp.UserSigningKeys[user] = k.JSON
		}
	}
	return resp, nil
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
func (s *Service) ClaimKeys(ctx context.Context, want map[string]map[string]string) (*ClaimResponse, error) {
	resp := &ClaimResponse{Failures: map[string]any{}, OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}}
	var reqs []ClaimRequest
	for user, devices := range want {
		if !strings.HasPrefix(user, "@") || serverOf(user) == "" {
			return nil, mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		if !s.IsLocal(user) {
			resp.Failures[serverOf(user)] = unreachable()
			continue
		}
		for device, alg := range devices {
			if alg == "" || device == "" {
				return nil, mxhttp.InvalidParam("Claims need a device ID and an algorithm")
			}
			reqs = append(reqs, ClaimRequest{UserID: user, DeviceID: device, Algorithm: alg})
		}
	}
	if len(reqs) > MaxQueryUsers {
		return nil, mxhttp.TooLarge("At most %d keys may be claimed at once", MaxQueryUsers)
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
		return nil, err
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
	return resp, nil
}
