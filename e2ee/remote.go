package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"homeserver/mxhttp"
)

// Waits for other servers' answers to /keys/query and /keys/claim.
const (
	// DefaultRemoteTimeout is the wait when the client names none (the
	// spec's default for the timeout field).
	DefaultRemoteTimeout = 10 * time.Second
	// MaxRemoteTimeout caps the wait a client may ask for.
	MaxRemoteTimeout = time.Minute
	// maxRemoteRequests bounds the servers asked at the same time.
	maxRemoteRequests = 50
)

// Remote reaches the keys of other servers' users: federation implements
// it with /user/keys/query and /user/keys/claim. Its errors may wrap an
// *mxhttp.Error carrying the status and error the server answered.
type Remote interface {
	// QueryRemoteKeys asks server for the keys of some of its users (all
	// their devices when a list is empty).
	QueryRemoteKeys(ctx context.Context, server string, want map[string][]string) (*RemoteKeys, error)
	// ClaimRemoteKeys claims one key of each device asked for: user ID to
	// device ID to algorithm. The answer is user ID to device ID to
	// "<algorithm>:<key_id>" to the key.
	ClaimRemoteKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// RemoteKeys is another server's answer to a key query.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage
	MasterKeys      map[string]json.RawMessage
	SelfSigningKeys map[string]json.RawMessage
}

// SetRemote connects the service to other servers. Until it is called,
// their users' keys are reported unreachable. Call before serving.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// Device is one device of a local user as other servers see it.
type Device struct {
	DeviceID string
	// Keys is the signed device keys object with the owner's own
	// (self-signing) signatures, without unsigned data.
	Keys        json.RawMessage
	DisplayName string
}

// UserKeys is what other servers may know of a local user's end-to-end
// encryption: the devices with keys, and the public master and
// self-signing keys (nil when the user has none).
type UserKeys struct {
	Devices                   []Device
	MasterKey, SelfSigningKey json.RawMessage
}

// RemoteDeviceListChanged records that another server's user changed their
// devices or keys (an m.device_list_update or m.signing_key_update): the
// local users who share a room with them see it in their device lists.
func (s *Service) RemoteDeviceListChanged(ctx context.Context, userID string) error {
	if s.IsLocal(userID) || serverOf(userID) == "" {
		return fmt.Errorf("e2ee: %q is not a user of another server", userID)
	}
	if err := s.store.RecordDeviceListChange(ctx, userID); err != nil {
		return err
	}
	s.DeviceListChanged(userID)
	return nil
}

// remoteTimeout is the wait for other servers given a client's timeout.
func remoteTimeout(t time.Duration) time.Duration {
	if t <= 0 {
		return DefaultRemoteTimeout
	}
	return min(t, MaxRemoteTimeout)
}

// remoteFailure is the failures entry of a server that did not answer.
func remoteFailure(err error) map[string]any {
	var mx *mxhttp.Error
	switch {
	case errors.As(err, &mx):
		f := map[string]any{"status": mx.Status, "message": mx.Message}
		if mx.Code != "" {
			f["errcode"] = mx.Code
		}
		return f
	case errors.Is(err, context.DeadlineExceeded):
		return map[string]any{"status": 503, "message": "Timed out waiting for the server"}
	default:
		return map[string]any{"status": 503, "message": err.Error()}
	}
}

// eachServer runs fn for every server at once (a bounded number at a
// time), under one deadline, and returns when all are done.
func eachServer(ctx context.Context, servers []string, timeout time.Duration, fn func(ctx context.Context, server string)) {
	ctx, cancel := context.WithTimeout(ctx, remoteTimeout(timeout))
	defer cancel()
	sem := make(chan struct{}, maxRemoteRequests)
	var wg sync.WaitGroup
	for _, server := range servers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(ctx, server)
		}()
	}
	wg.Wait()
}

// queryRemote asks each server for the keys of its users wanted and adds
// what they answer (about those users only) to resp.
func (s *Service) queryRemote(ctx context.Context, resp *QueryResponse, byServer map[string]map[string][]string, timeout time.Duration) {
	if len(byServer) == 0 {
		return
	}
	var mu sync.Mutex
	eachServer(ctx, sortedKeys(byServer), timeout, func(ctx context.Context, server string) {
		want := byServer[server]
		keys, err := s.remote.QueryRemoteKeys(ctx, server, want)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			s.log.Info("querying keys of another server's users", "server", server, "err", err)
			resp.Failures[server] = remoteFailure(err)
			return
		}
		for user, devices := range want {
			if got, ok := keys.DeviceKeys[user]; ok {
				out := map[string]json.RawMessage{}
				for id, obj := range got {
					if len(devices) == 0 || slices.Contains(devices, id) {
						out[id] = obj
					}
				}
				resp.DeviceKeys[user] = out
			}
			if k, ok := keys.MasterKeys[user]; ok {
				resp.MasterKeys[user] = k
			}
			if k, ok := keys.SelfSigningKeys[user]; ok {
				resp.SelfSigningKeys[user] = k
			}
		}
	})
}

// claimRemote claims keys of other servers' users' devices into resp.
func (s *Service) claimRemote(ctx context.Context, resp *ClaimResponse, byServer map[string]map[string]map[string]string, timeout time.Duration) {
	if len(byServer) == 0 {
		return
	}
	var mu sync.Mutex
	eachServer(ctx, sortedKeys(byServer), timeout, func(ctx context.Context, server string) {
		want := byServer[server]
		keys, err := s.remote.ClaimRemoteKeys(ctx, server, want)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			s.log.Info("claiming keys of another server's users", "server", server, "err", err)
			resp.Failures[server] = remoteFailure(err)
			return
		}
		for user, devices := range want {
			for device := range devices {
				k, ok := keys[user][device]
				if !ok || len(k) == 0 {
					continue
				}
				if resp.OneTimeKeys[user] == nil {
					resp.OneTimeKeys[user] = map[string]map[string]json.RawMessage{}
				}
				resp.OneTimeKeys[user][device] = k
			}
		}
	})
}
