// Package federation connects this server with other Matrix servers: it
// serves the federation API (transactions of events, joins, leaves,
// invites, queries), joins and invites through other servers for the rooms
// service, and sends this server's events to every server in their rooms,
// one durable queue per destination.
//
// Received events go through the rooms service's single writer, auth rules
// and log, so that sync, application services and push see them exactly as
// local ones. Outbound, a fan-out reader follows the event log and fills a
// per-destination outbox; one reader per destination sends it in
// transactions, in order, retrying the same transaction with exponential
// backoff while the destination is down.
package federation

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// Client sends signed requests to other servers (federation/transport).
type Client interface {
	Do(ctx context.Context, method, destination, requestURI string, body any, out any) error
}

// Profiles answers profile queries about local users.
type Profiles interface {
	GetProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
}

// EDUs applies ephemeral data other servers send: typing, receipts,
// presence, to-device messages. Any of its functions may be nil.
type EDUs struct {
	Typing   func(roomID, userID string, typing bool, timeout time.Duration)
	Receipt  func(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error
	Presence func(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64, currentlyActive bool) error
	// ToDevice delivers messages (local user ID to device ID or "*" to
	// content) from another server's user.
	ToDevice func(ctx context.Context, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
}

// Config of the federation service.
type Config struct {
	ServerName string
	Key        pdu.Key
	// MinRetry and MaxRetry bound the backoff of a failing destination
	// (Synapse's destination_min_retry_interval and
	// destination_max_retry_interval); the wait doubles in between.
	MinRetry, MaxRetry time.Duration
	// PublicRoomsOverFederation lets other servers list this server's room
	// directory (Synapse's allow_public_rooms_over_federation).
	PublicRoomsOverFederation bool
	// RateLimit limits each origin's requests (zero: DefaultRateLimit).
	RateLimit RateLimit
	// ServerVersion is what /version answers.
	ServerVersion string
	Logger        *slog.Logger
	Now           func() time.Time
}

// Deps are the services federation works with.
type Deps struct {
	Rooms *rooms.Service
	Store Store
	// Log and Receipts are what the sender reads.
	Log      LogSource
	Receipts ReceiptSource
	Presence PresenceSource
	Client   Client
	Keys     KeyRing
	Profiles Profiles
	// OpenID resolves OpenID tokens for the userinfo endpoint; nil
	// answers every token as unknown.
	OpenID OpenIDTokens
	EDUs   EDUs
	// E2EE and DeviceLists serve and announce local users' keys; without
	// them the key endpoints answer M_UNRECOGNIZED.
	E2EE        E2EE
	DeviceLists DeviceListStore
	// Spaces answers /hierarchy; without it the endpoint answers
	// M_UNRECOGNIZED.
	Spaces  SpaceHierarchy
	Hub     *stream.Hub
	Leaser  stream.Leaser
	Metrics *stream.Metrics
}

// Service is the federation of this server.
type Service struct {
	cfg      Config
	rooms    *rooms.Service
	store    Store
	eventLog LogSource
	receipts ReceiptSource
	presence PresenceSource
	client   Client
	keys     KeyRing
	profiles Profiles
	openID   OpenIDTokens
	edus     EDUs
	e2ee     E2EE
	spaces   SpaceHierarchy
	// deviceLists keeps what other servers were told of local devices.
	deviceLists DeviceListStore
	hub         *stream.Hub
	leaser      stream.Leaser
	metrics     *stream.Metrics
	log         *slog.Logger
	now         func() time.Time
	sender      *sender
	limiter     *originLimiter

	startMu sync.Mutex
	stop    func()
}

// New returns the federation service; Start runs its sender.
func New(cfg Config, d Deps) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = 10 * time.Minute
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(cfg.MinRetry, 12*time.Hour)
	}
	if d.Leaser == nil {
		d.Leaser = stream.Local{}
	}
	if d.Metrics == nil {
		d.Metrics = stream.NewMetrics()
	}
	s := &Service{cfg: cfg, rooms: d.Rooms, store: d.Store, eventLog: d.Log, receipts: d.Receipts, presence: d.Presence, client: d.Client, keys: d.Keys, profiles: d.Profiles, openID: d.OpenID,
		edus: d.EDUs, e2ee: d.E2EE, spaces: d.Spaces, deviceLists: d.DeviceLists, hub: d.Hub, leaser: d.Leaser, metrics: d.Metrics, log: cfg.Logger, now: cfg.Now}
	s.sender = newSender(s)
	if cfg.RateLimit == (RateLimit{}) {
		cfg.RateLimit = DefaultRateLimit
	}
	s.limiter = newOriginLimiter(cfg.RateLimit, cfg.Now)
	return s
}

func (s *Service) isLocal(id string) bool { return serverOf(id) == s.cfg.ServerName }

func serverOf(id string) string {
	_, server, _ := strings.Cut(id, ":")
	return server
}
