// Package server assembles the homeserver from its configuration: storage,
// keys, the services and the HTTP listeners. cmd/homeserver runs it; the
// integration tests start it in-process.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"homeserver/adminapi"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"homeserver/accountdata"
	"homeserver/accounts"
	"homeserver/appservice"
	"homeserver/clientapi"
	"homeserver/config"
	"homeserver/e2ee"
	"homeserver/keybackup"
	"homeserver/media"
	"homeserver/metrics"
	"homeserver/pdu"
	"homeserver/presence"
	"homeserver/push"
	"homeserver/receipts"
	"homeserver/reports"
	"homeserver/rooms"
	"homeserver/search"
	"homeserver/serverkey"
	"homeserver/spaces"
	"homeserver/storage"
	"homeserver/stream"
	"homeserver/syncapi"
	"homeserver/todevice"
	"homeserver/typing"
	"homeserver/userdir"
)

// Server is a running (or ready to run) homeserver.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	db       *storage.DB
	key      serverkey.Key
	registry *prometheus.Registry
	http     *metrics.HTTP
	accounts *accounts.Service
	rooms    *rooms.Service
	client   *clientapi.API
	admin    *adminapi.API
	typing   *typing.Service
	media    *media.HTTP
	push     *push.Service
	userDir  *userdir.Service
	search   *search.Service
	presence *presence.Service
	hub      *stream.Hub
	readers  *stream.Metrics
	leaser   stream.Leaser

	appservices *appservice.Set
	asQueues    *appservice.Dispatcher
	fed         *fedParts

	timeouts Timeouts

	mu      sync.Mutex
	servers []*http.Server
	addrs   []net.Addr
	wg      sync.WaitGroup
}

// New opens the database (applying migrations), loads or generates the
// signing key and builds the services. Nothing listens until Start.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	key, generated, err := serverkey.LoadOrGenerate(cfg.SigningKeyPath)
	if err != nil {
		return nil, err
	}
	if generated {
		log.Info("generated a new signing key", "path", cfg.SigningKeyPath, "key_id", key.ID)
	}
	appservices, err := appservice.Load(cfg.AppServiceConfigFiles, log)
	if err != nil {
		return nil, err
	}
	reg := metrics.NewRegistry()
	opts := StorageOptions(cfg.Database)
	opts.Logger, opts.Registerer = log, reg
	if opts.Engine == storage.Postgres {
		// pg_stat_activity then tells the deployment's processes apart.
		opts.DSN += " application_name='homeserver " + instanceName(cfg) + "'"
	}
	db, err := storage.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	acc := accounts.New(db, accounts.Config{
		ServerName: cfg.ServerName, BcryptCost: cfg.BcryptRounds,
		RefreshLifetime:      time.Duration(cfg.RefreshableAccessTokenLifetime),
		RefreshTokenLifetime: time.Duration(cfg.RefreshTokenLifetime), Logger: log,
	})
	rms := rooms.New(db, profiles{acc}, rooms.Config{
		ServerName: cfg.ServerName, DefaultVersion: cfg.DefaultRoomVersion, Logger: log,
		Key:               pdu.Key{ServerName: cfg.ServerName, KeyID: key.ID, Private: key.Private},
		ServerNoticesUser: serverNoticesUser(cfg),
		WriterReads:       db.WriterReads(),
	})
	// Unknown users and aliases in a service's namespaces are asked of it,
	// synchronously, so that it can create them inside the client's request.
	asQuery := appservice.NewQuerier(appservices, appservice.DefaultQueryTimeout, log)
	acc.SetUserQuerier(asQuery.QueryUser)
	rms.SetAliasQuerier(asQuery.QueryAlias)
	if err := setUpAppServices(ctx, appservices, acc, rms); err != nil {
		_ = db.Close()
		return nil, err
	}
	// The spine: every writer announces what it committed on the hub;
	// the sync notifier and the durable readers (application service
	// queues, push evaluator, pushers) learn of it there. The hub only
	// says "look again": everyone reads from their own position.
	hub := stream.NewHub(log)
	// With PostgreSQL, several processes may serve one deployment: the
	// hub's announcements reach the others over the database, and each
	// background reader runs in one process at a time, under a lease.
	if db.Engine() == storage.SQLite && len(cfg.RunBackgroundTasksOn) > 0 {
		_ = db.Close()
		return nil, fmt.Errorf("%s: run_background_tasks_on needs PostgreSQL: a SQLite database serves one process", cfg.Path)
	}
	instance := storage.NewInstanceID(cfg.InstanceName)
	if bus := db.Bus(instance); bus != nil {
		hub.Connect(bus)
	}
	leaseTTL := time.Duration(cfg.ReaderLease)
	if leaseTTL <= 0 {
		leaseTTL = 10 * time.Second
	}
	var leaser stream.Leaser = db.Leaser(instance, leaseTTL)
	if name := instanceName(cfg); len(cfg.RunBackgroundTasksOn) > 0 && !cfg.RunBackgroundTasksOn.Contains(name) {
		log.Info("background readers run on other processes", "instance", name, "run_background_tasks_on", cfg.RunBackgroundTasksOn)
		leaser = stream.Never{}
	}
	notifier := syncapi.NewNotifier()
	hub.OnChange(func(c stream.Change) {
		for _, r := range c.Rooms {
			notifier.WakeRoom(r)
		}
		for _, u := range c.Users {
			notifier.WakeUser(u)
		}
	})
	announce := func(name stream.Name, pos int64, rooms, users []string) {
		hub.Announce(stream.Change{Stream: name, Pos: pos, Rooms: rooms, Users: users})
	}
	// announceSharers announces a change of what others see of a user
	// (presence, devices, keys): it concerns everyone sharing a room.
	announceSharers := func(name stream.Name, userID string) {
		joined, err := rms.RoomsWithMembership(context.Background(), userID, "join")
		if err != nil {
			log.Warn("listing rooms to announce a change", "user_id", userID, "err", err)
		}
		announce(name, 0, joined, []string{userID})
	}
	rms.OnPersist(func(p rooms.Persisted) {
		var users []string
		if p.Type == "m.room.member" && p.StateKey != nil {
			users = []string{*p.StateKey}
		}
		announce(stream.Events, p.Pos, []string{p.RoomID}, users)
	})

	// Every durable reader (queues, evaluator, pushers) reports through
	// one family of gauges.
	readers := stream.NewMetrics()
	if err := reg.Register(readers); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// Each application service with a URL has an ordered, persistent queue
	// of the events (and ephemeral data) that interest it.
	asQueues, err := appservice.NewDispatcher(appservices, db, rms, appservice.Config{
		ServerName: cfg.ServerName, Logger: log, Registerer: reg, Hub: hub, Metrics: readers, Leaser: leaser,
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	accountData := accountdata.New(db, func(userID string) { announce(stream.AccountData, 0, nil, []string{userID}) })
	pres := presence.New(db, func(userID string) { announceSharers(stream.Presence, userID) }, time.Now)
	rcpt := receipts.New(db, func(roomID string) { announce(stream.Receipts, 0, []string{roomID}, nil) })
	// Typing lives in memory in each process: a notice received here is
	// shared with the others, which apply it; expiries happen everywhere
	// by themselves.
	var fed *fedParts
	typ := typing.New(func(roomID string, n *typing.Notice) {
		c := stream.Change{Stream: stream.Typing, Rooms: []string{roomID}}
		if n == nil {
			hub.AnnounceLocal(c)
			return
		}
		if fed != nil {
			// Other servers in the room hear of local users' typing.
			go fed.service.QueueTyping(context.Background(), roomID, n.UserID, n.Typing)
		}
		c.Pos = n.Pos
		c.Data, _ = json.Marshal(n)
		hub.Announce(c)
	})
	hub.OnChange(func(c stream.Change) {
		if c.Stream == stream.Typing && c.Remote && c.Data != nil {
			var n typing.Notice
			if json.Unmarshal(c.Data, &n) == nil {
				typ.Apply(n)
			}
		}
	})
	// End-to-end encryption (keys and to-device messages) is served to
	// and asked of other servers too.
	keys := e2ee.New(db, e2ee.Config{ServerName: cfg.ServerName, Logger: log})
	toDevice := todevice.New(db, cfg.ServerName, log)
	signingKey := pdu.Key{ServerName: cfg.ServerName, KeyID: key.ID, Private: key.Private}
	spc := spaces.New(rms, log)
	if fed, err = newFederation(cfg, signingKey, db, rms, spc, acc, typ, rcpt, pres, keys, toDevice, hub, leaser, readers, log); err != nil {
		_ = db.Close()
		return nil, err
	}
	asQueues.SetEphemeral(appservice.EphemeralSources{Typing: typ, Receipts: rcpt, Presence: pres, Keys: keys})
	// Push rules are evaluated on every new event by a reader with its own
	// durable cursor; pushers read the notifications it writes.
	// Push gateways' URLs are users' to choose: their connections are
	// checked like federation's.
	pushGuard, err := outboundGuard(cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	pushSvc := push.New(db, push.Config{ServerName: cfg.ServerName, Logger: log, Hub: hub, Metrics: readers, Leaser: leaser, Guard: pushGuard})
	userDir := userdir.New(db, userdir.Config{
		ServerName: cfg.ServerName, Enabled: cfg.UserDirectory.Enabled,
		SearchAllUsers: cfg.UserDirectory.SearchAllUsers, PreferLocalUsers: cfg.UserDirectory.PreferLocalUsers,
		Logger: log, Hub: hub, Metrics: readers, Leaser: leaser,
	})
	searchSvc := search.New(db, rms, search.Config{Logger: log, Hub: hub, Metrics: readers, Leaser: leaser})
	pushSvc.OnRulesChanged(func(userID string, rs *push.Ruleset) {
		if err := accountData.PutInternal(context.Background(), userID, "", "m.push_rules", push.MarshalRuleset(rs)); err != nil {
			log.Warn("updating m.push_rules", "user_id", userID, "err", err)
		}
	})
	// End-to-end encryption: keys and their device-list stream, and
	// to-device messages.
	keys.OnDeviceListChange(func(userID string) { announceSharers(stream.DeviceLists, userID) })
	acc.OnDevicesChanged(func(userID string) { announceSharers(stream.DeviceLists, userID) })
	keys.OnKeysChange(func(e2ee.DeviceRef) { announce(stream.OTK, 0, nil, nil) })
	toDevice.OnMessage(func(userID string) { announce(stream.ToDevice, 0, nil, []string{userID}) })
	rl := func(r config.RateLimit) clientapi.RateLimit {
		return clientapi.RateLimit{PerSecond: r.PerSecond, Burst: r.BurstCount}
	}
	client := clientapi.New(clientapi.Config{
		ServerName:                cfg.ServerName,
		PublicBaseURL:             cfg.PublicBaseURL,
		ExtraWellKnown:            cfg.ExtraWellKnownClientContent,
		EnableRegistration:        cfg.EnableRegistration,
		RegistrationRequiresToken: cfg.RegistrationRequiresToken,
		RegistrationTokens:        cfg.RegistrationTokens,
		AllowGuestAccess:          cfg.AllowGuestAccess,
		SharedSecret:              cfg.RegistrationSharedSecret,
		DefaultRoomVersion:        cfg.DefaultRoomVersion,
		RcRegistration:            rl(cfg.RcRegistration),
		RcLoginAddress:            rl(cfg.RcLogin.Address),
		RcLoginAccount:            rl(cfg.RcLogin.Account),
		RcLoginFailed:             rl(cfg.RcLogin.FailedAttempts),
		RcMessage:                 rl(cfg.RcMessage),
		RcJoinsLocal:              rl(cfg.RcJoins.Local),
		RcInvitesPerRoom:          rl(cfg.RcInvites.PerRoom),
		RcInvitesPerUser:          rl(cfg.RcInvites.PerUser),
		Turn:                      turnConfig(cfg),
		Support:                   supportInfo(cfg),
		LoginTokens: clientapi.LoginTokens{
			Enabled: cfg.LoginViaExistingSession.Enabled, RequireUIA: cfg.LoginViaExistingSession.RequireUIAuth,
			Lifetime: time.Duration(cfg.LoginViaExistingSession.TokenTimeout),
		},
	}, clientapi.Deps{
		Accounts: acc, Rooms: rms, AccountData: accountData, Presence: pres, Receipts: rcpt, Typing: typ,
		Sync: syncapi.New(syncapi.Deps{
			Rooms: rms, Filters: db, AccountData: accountData, Receipts: rcpt, Typing: typ,
			Presence: pres, Notifier: notifier, Push: pushSvc, Keys: keys, ToDevice: toDevice, Logger: log,
			Limits: syncapi.Limits{PerUser: cfg.LongPolls.PerUser, Total: cfg.LongPolls.Max}, Heads: db, Sliding: db, Reads: db,
		}),
		AppServices: appservices, AppServiceQuerier: asQuery, Push: pushSvc,
		Keys: keys, ToDevice: toDevice, KeyBackup: keybackup.New(db), RemoteProfiles: remoteProfiles(cfg, fed), Spaces: spc,
		UserDir: userDir, Search: searchSvc,
		Reports: reports.New(db),
	}, log)
	mediaHTTP, err := newMedia(cfg, db, client, fed, log)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	var destinations adminapi.DestinationAdmin
	if federates(cfg) {
		destinations = fed.service
	}
	admin := adminapi.New(adminapi.Deps{
		Accounts: acc, Rooms: rms, Reports: reports.New(db), Store: db,
		Media: mediaHTTP.Service(), Destinations: destinations,
		Notices:   serverNotices(cfg, acc, rms, accountData, log),
		UserDir:   userDir,
		Requester: clientapi.RequesterOf, Logger: log,
	})
	client.SetAdmin(admin)
	if cfg.EnableIdenticons {
		// New users' default avatar is their identicon, in the media store.
		client.SetDefaultAvatar(mediaHTTP.IdenticonAvatar)
	}
	return &Server{
		cfg: cfg, log: log, db: db, key: key, registry: reg, timeouts: DefaultTimeouts,
		http: metrics.NewHTTP(reg), accounts: acc, rooms: rms, client: client, admin: admin, typing: typ,
		media:    mediaHTTP,
		push:     pushSvc,
		userDir:  userDir,
		search:   searchSvc,
		presence: pres,
		hub:      hub, readers: readers, leaser: leaser,
		appservices: appservices, asQueues: asQueues, fed: fed,
	}, nil
}

// Accounts exposes the accounts service (for tools and tests).
func (s *Server) Accounts() *accounts.Service { return s.accounts }

// Rooms exposes the rooms service (for tools and tests).
func (s *Server) Rooms() *rooms.Service { return s.rooms }

// Push exposes the push service (for tests).
func (s *Server) Push() *push.Service { return s.push }

// AppServiceQueues exposes the application service dispatcher (for tests).
func (s *Server) AppServiceQueues() *appservice.Dispatcher { return s.asQueues }

// Start binds every configured listener and serves in the background.
func (s *Server) Start() error {
	if err := s.startQueues(); err != nil {
		return err
	}
	for _, lc := range s.cfg.Listeners {
		addrs := lc.BindAddresses
		if len(addrs) == 0 {
			addrs = []string{"127.0.0.1"}
		}
		for _, host := range addrs {
			addr := net.JoinHostPort(host, strconv.Itoa(lc.Port))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				_ = s.Shutdown(context.Background())
				return fmt.Errorf("listen on %s: %w", addr, err)
			}
			if err := s.Serve(l, lc); err != nil {
				l.Close()
				_ = s.Shutdown(context.Background())
				return err
			}
		}
	}
	return nil
}

// Serve serves one listener configured as lc on an already bound socket.
func (s *Server) Serve(l net.Listener, lc config.Listener) error {
	if err := s.startQueues(); err != nil {
		return err
	}
	if lc.Type == "metrics" && !s.cfg.EnableMetrics {
		s.log.Warn("metrics listener configured but enable_metrics is false; serving it anyway", "addr", l.Addr())
	}
	srv := newHTTPServer(s.Handler(lc), s.timeouts, s.log)
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.addrs = append(s.addrs, l.Addr())
	s.mu.Unlock()
	scheme := "http"
	if lc.TLS {
		scheme = "https"
	}
	s.log.Info("listening", "addr", scheme+"://"+l.Addr().String(), "type", lc.Type, "resources", resourceNames(lc))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		if lc.TLS {
			err = srv.ServeTLS(l, s.cfg.TLSCertificatePath, s.cfg.TLSPrivateKeyPath)
		} else {
			err = srv.Serve(jsonErrorListener{l})
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener stopped", "addr", l.Addr(), "err", err)
		}
	}()
	return nil
}

// Addrs returns the addresses being served, in listener order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// Shutdown stops accepting requests, waits for those in flight (up to ctx's
// deadline) and closes the database.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	s.admin.Stop()  // room deletions record where they stopped
	s.media.Close() // thumbnails being made write to the database
	s.asQueues.Stop()
	s.fed.service.Stop()
	s.fed.client.Close()
	s.push.Stop()
	s.userDir.Stop()
	s.search.Stop()
	s.presence.StopIdleSweep()
	s.typing.Close()
	s.hub.Close()
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	return errors.Join(errs...)
}

// startQueues starts the application service queues, once, before the
// first request is served: a new service's cursor is then placed before any
// event a request writes.
func (s *Server) startQueues() error {
	if err := s.asQueues.Start(context.Background()); err != nil {
		return err
	}
	if err := s.push.Start(context.Background()); err != nil {
		return err
	}
	s.userDir.Start()
	s.search.Start()
	s.presence.StartIdleSweep(s.log, s.readers, s.leaser)
	s.fed.service.Start()
	return nil
}

func resourceNames(lc config.Listener) []string {
	var names []string
	for _, r := range lc.Resources {
		names = append(names, r.Names...)
	}
	return names
}

// instanceName is this process's name among the deployment's.
func instanceName(cfg *config.Config) string {
	if cfg.InstanceName == "" {
		return "main"
	}
	return cfg.InstanceName
}
