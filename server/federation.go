package server

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"homeserver/accounts"
	"homeserver/clientapi"
	"homeserver/config"
	"homeserver/e2ee"
	"homeserver/federation"
	"homeserver/federation/keys"
	"homeserver/federation/transport"
	"homeserver/mxhttp"
	"homeserver/netguard"
	"homeserver/pdu"
	"homeserver/presence"
	"homeserver/receipts"
	"homeserver/rooms"
	"homeserver/spaces"
	"homeserver/storage"
	"homeserver/stream"
	"homeserver/todevice"
	"homeserver/typing"
)

// fedParts is federation as the server wires it.
type fedParts struct {
	keys    *keys.Keys
	service *federation.Service
	client  *transport.Client
}

// outboundGuard is the IP blocklist of requests whose target a user can
// choose: ip_range_blacklist (or its older name), the private and reserved
// ranges by default, with ip_range_whitelist's holes.
func outboundGuard(cfg *config.Config) (*netguard.Guard, error) {
	parse := func(list []string) ([]netip.Prefix, error) {
		out := make([]netip.Prefix, 0, len(list))
		for _, r := range list {
			p, err := config.ParseIPRange(r)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
	block := netguard.DefaultBlocklist()
	if list := cfg.IPRangeBlacklist; list != nil {
		var err error
		if block, err = parse(list); err != nil {
			return nil, err
		}
	} else if list := cfg.FederationIPRangeBlacklist; list != nil {
		var err error
		if block, err = parse(list); err != nil {
			return nil, err
		}
	}
	allow, err := parse(cfg.IPRangeWhitelist)
	if err != nil {
		return nil, err
	}
	return netguard.New(netguard.Options{Block: block, Allow: allow}), nil
}

// newFederation builds the federation client, the key ring and the
// federation service. With federation_domain_whitelist: [] the key ring
// and endpoints still exist but the client reaches nobody.
func newFederation(cfg *config.Config, key pdu.Key, db *storage.DB, rms *rooms.Service, spc *spaces.Service, acc *accounts.Service,
	typ *typing.Service, rcpt *receipts.Service, pres *presence.Service, e2eeKeys *e2ee.Service, toDevice *todevice.Service,
	hub *stream.Hub, leaser stream.Leaser, readers *stream.Metrics, log *slog.Logger) (*fedParts, error) {
	guard, err := outboundGuard(cfg)
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if len(cfg.FederationCustomCAList) > 0 {
		if roots, err = x509.SystemCertPool(); err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		for _, path := range cfg.FederationCustomCAList {
			pem, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("federation_custom_ca_list: %w", err)
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("federation_custom_ca_list: %s holds no PEM certificate", path)
			}
		}
	}
	insecure := cfg.FederationVerifyCertificates != nil && !*cfg.FederationVerifyCertificates
	if insecure {
		log.Warn("federation_verify_certificates is false: other servers' certificates are not checked")
	}
	resolver := transport.NewResolver(transport.ResolverOptions{
		Guard: guard, RootCAs: roots, InsecureSkipVerify: insecure, Overrides: cfg.FederationHostOverrides, Logger: log,
	})
	client, err := transport.NewClient(transport.ClientOptions{
		ServerName: cfg.ServerName, Key: key, Resolver: resolver, Guard: guard, RootCAs: roots,
		InsecureSkipVerify: insecure, DomainWhitelist: cfg.FederationDomainWhitelist,
		Timeout: time.Duration(cfg.Federation.ClientTimeout), Logger: log,
	})
	if err != nil {
		return nil, err
	}
	old := map[string]keys.OldKey{}
	for id, k := range cfg.OldSigningKeys {
		pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(k.Key, "="))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("old_signing_keys.%s: not an unpadded base64 ed25519 public key", id)
		}
		old[id] = keys.OldKey{Key: pub, ExpiredTS: k.ExpiredTS}
	}
	var notaries []keys.TrustedKeyServer
	for i, t := range cfg.TrustedKeyServers {
		n := keys.TrustedKeyServer{ServerName: t.ServerName, VerifyKeys: map[string]ed25519.PublicKey{}}
		for id, b64 := range t.VerifyKeys {
			pub, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
			if err != nil || len(pub) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("trusted_key_servers[%d].verify_keys.%s: not an unpadded base64 ed25519 public key", i, id)
			}
			n.VerifyKeys[id] = pub
		}
		notaries = append(notaries, n)
	}
	ring, err := keys.New(keys.Options{
		ServerName: cfg.ServerName, Key: key, OldKeys: old, RefreshInterval: time.Duration(cfg.KeyRefreshInterval),
		Store: db, Fetcher: client, TrustedKeyServers: notaries, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	version := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	fed := federation.New(federation.Config{
		ServerName: cfg.ServerName, Key: key, ServerVersion: version, Logger: log,
		MinRetry:                  time.Duration(cfg.Federation.DestinationMinRetryInterval),
		MaxRetry:                  time.Duration(cfg.Federation.DestinationMaxRetryInterval),
		PublicRoomsOverFederation: cfg.AllowPublicRoomsOverFederation,
		RateLimit: federation.RateLimit{Window: time.Duration(cfg.RcFederation.WindowSize), SleepLimit: cfg.RcFederation.SleepLimit,
			SleepDelay: time.Duration(cfg.RcFederation.SleepDelay), RejectLimit: cfg.RcFederation.RejectLimit, Concurrent: cfg.RcFederation.Concurrent},
	}, federation.Deps{
		Rooms: rms, Store: db, Log: db, Receipts: db, Presence: db, Client: client, Keys: ring, Profiles: acc, OpenID: acc,
		EDUs: federation.EDUs{
			Typing: func(roomID, userID string, on bool, timeout time.Duration) { typ.Set(roomID, userID, on, timeout) },
			Receipt: func(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, _ int64) error {
				return rcpt.Post(ctx, userID, roomID, receiptType, eventID, threadID)
			},
			Presence: func(ctx context.Context, userID, state, statusMsg string, _ int64, _ bool) error {
				return pres.Set(ctx, userID, state, statusMsg, true)
			},
			ToDevice: toDevice.Receive,
		},
		E2EE: e2eeKeys, DeviceLists: db, Spaces: spc,
		Hub: hub, Leaser: leaser, Metrics: readers,
	})
	if federates(cfg) {
		rms.SetRemote(fed)
		spc.SetRemote(fed)
		e2eeKeys.SetRemote(fed)
		toDevice.SetRemote(fed)
	}
	return &fedParts{keys: ring, service: fed, client: client}, nil
}

// federates tells whether this server reaches other servers: not with
// federation_domain_whitelist: [].
func federates(cfg *config.Config) bool {
	return cfg.FederationDomainWhitelist == nil || len(cfg.FederationDomainWhitelist) > 0
}

// remoteProfiles is what the client API asks other servers' users'
// profiles of: federation, unless this server reaches no other.
func remoteProfiles(cfg *config.Config, fed *fedParts) clientapi.RemoteProfiles {
	if !federates(cfg) {
		return nil
	}
	return fed.service
}

// serverWellKnown delegates federation to port 443 of public_baseurl's
// host (or the server name's), as Synapse's serve_server_wellknown does.
func (s *Server) serverWellKnown(w http.ResponseWriter, _ *http.Request) {
	host := s.cfg.ServerName
	if u, err := url.Parse(s.cfg.PublicBaseURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	w.Header().Set("Cache-Control", "max-age=86400")
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"m.server": net.JoinHostPort(host, "443")})
}
