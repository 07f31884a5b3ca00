//go:build fedinterop

package fedinterop_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"homeserver/internal/fedtest"
	"homeserver/internal/testserver"
)

const peerName = "peer.test"

// peer is a federation server made of mautrix-go's parts: its key server,
// its request authentication and its client.
type peer struct {
	t        *testing.T
	key      *federation.SigningKey
	client   *federation.Client
	cache    *federation.InMemoryCache
	received chan json.RawMessage
	addr     string

	// held are events the peer has but did not send: it serves them
	// through get_missing_events.
	mu   sync.Mutex
	held []json.RawMessage
	// authChain is what the peer answers to /event_auth.
	authChain []json.RawMessage
}

func newPeer(t *testing.T, ca *fedtest.CA) *peer {
	p := &peer{t: t, key: federation.GenerateSigningKey(), cache: federation.NewInMemoryCache(), received: make(chan json.RawMessage, 100)}
	p.client = federation.NewClient(peerName, p.key, p.cache, exhttp.ClientSettings{
		TLSConfig: &tls.Config{RootCAs: ca.Pool()}, DialTimeout: 5 * time.Second, GlobalTimeout: 30 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 30 * time.Second,
	})
	p.client.AllowIP = func(net.IP) bool { return true } // loopback, in tests
	mux := http.NewServeMux()
	(&federation.KeyServer{
		KeyProvider: &federation.StaticServerKey{ServerName: peerName, Key: p.key},
		Version:     federation.ServerVersion{Name: "mautrix-go peer", Version: "test"},
	}).Register(mux, zerolog.Nop())
	auth := federation.NewServerAuth(p.client, p.cache, func(federation.XMatrixAuth) string { return peerName })
	mux.Handle("PUT /_matrix/federation/v1/send/{txnID}", auth.AuthenticateMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var txn struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		data, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(data, &txn); err != nil {
			http.Error(w, `{"errcode":"M_BAD_JSON"}`, 400)
			return
		}
		for _, p2 := range txn.PDUs {
			p.received <- p2
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	})))
	mux.Handle("POST /_matrix/federation/v1/get_missing_events/{roomID}", auth.AuthenticateMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		held := slices.Clone(p.held)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"events": held})
	})))
	mux.Handle("GET /_matrix/federation/v1/event_auth/{roomID}/{eventID}", auth.AuthenticateMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		chain := slices.Clone(p.authChain)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"auth_chain": chain})
	})))
	cert, err := ca.TLSCertificate(peerName)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.addr = srv.Listener.Addr().String()
	return p
}

// knows tells the peer where a server of ours listens.
func (p *peer) knows(name, addr string) {
	_ = p.cache.StoreResolution(context.Background(), &federation.ResolvedServerName{
		ServerName: name, HostHeader: name, IPPort: []string{addr}, Expires: time.Now().Add(time.Hour),
	})
}

// keyOf is mautrix's key lookup for verifying our events.
func (p *peer) keyOf(ctx context.Context) pdu.GetKeyFunc {
	return func(serverName string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		resp, err := p.client.ServerKeys(ctx, serverName)
		if err != nil {
			return "", time.Time{}, err
		}
		if err := resp.VerifySelfSignature(); err != nil {
			return "", time.Time{}, err
		}
		k, ok := resp.VerifyKeys[keyID]
		if !ok {
			return "", time.Time{}, nil
		}
		return k.Key, resp.ValidUntilTS.Time, nil
	}
}

// sign signs an event as the peer, with mautrix's PDU code.
func (p *peer) sign(ev *pdu.PDU) (json.RawMessage, id.EventID) {
	p.t.Helper()
	if err := ev.Sign(id.RoomV10, peerName, p.key.ID, p.key.Priv); err != nil {
		p.t.Fatal(err)
	}
	evID, err := ev.GetEventID(id.RoomV10)
	if err != nil {
		p.t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(ev)
	if err != nil {
		p.t.Fatal(err)
	}
	return raw, evID
}

func TestMautrixPeer(t *testing.T) {
	ctx := context.Background()
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	p := newPeer(t, ca)
	f := testserver.NewFederationWith(t, testserver.FederationOptions{CA: ca, Peers: map[string]string{peerName: p.addr}}, "hs1.test")
	hs1 := f.Servers["hs1.test"]
	p.knows("hs1.test", hs1.FederationAddr())
	alice := hs1.Register("alice", "pw")
	hs1.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.ID)+"/displayname", alice.Token, map[string]any{"displayname": "Alice"})
	room := hs1.CreateRoom(alice, map[string]any{"preset": "public_chat", "room_version": "10", "room_alias_name": "interop"})
	carol := id.UserID("@carol:" + peerName)

	// Queries, answered to mautrix's client.
	prof, err := p.client.QueryProfile(ctx, "hs1.test", id.UserID(alice.ID))
	if err != nil || prof.DisplayName != "Alice" {
		t.Fatalf("query profile: %v %+v", err, prof)
	}
	dir, err := p.client.QueryDirectory(ctx, "hs1.test", id.RoomAlias("#interop:hs1.test"))
	if err != nil || string(dir.RoomID) != room {
		t.Fatalf("query directory: %v %+v", err, dir)
	}
	ver, err := p.client.Version(ctx, "hs1.test")
	if err != nil || ver.Server.Name == "" {
		t.Fatalf("version: %v %+v", err, ver)
	}

	// The peer joins: make_join, sign with mautrix, send_join, and check
	// the returned state with mautrix's signature checks.
	mk, err := p.client.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: id.RoomID(room), UserID: carol, Via: "hs1.test", SupportedVersions: []id.RoomVersion{id.RoomV10}})
	if err != nil || mk.RoomVersion != id.RoomV10 {
		t.Fatalf("make_join: %v %+v", err, mk)
	}
	var join pdu.PDU
	if err := jsonv2.Unmarshal(mk.Event, &join); err != nil {
		t.Fatalf("make_join template: %v", err)
	}
	join.OriginServerTS = time.Now().UnixMilli()
	joinRaw, joinID := p.sign(&join)
	sj, err := p.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: id.RoomID(room), EventID: joinID, Event: joinRaw, Via: "hs1.test"})
	if err != nil {
		t.Fatalf("send_join: %v", err)
	}
	auth := map[string]id.EventID{}
	for _, raw := range sj.State {
		var ev pdu.PDU
		if err := jsonv2.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("state event: %v", err)
		}
		if !ev.VerifyContentHash() {
			t.Errorf("state event content hash fails mautrix's check: %s", raw)
		}
		if err := ev.VerifySignature(id.RoomV10, "hs1.test", p.keyOf(ctx)); err != nil {
			t.Errorf("state event signature fails mautrix's check: %v", err)
		}
		evID, _ := ev.GetEventID(id.RoomV10)
		if ev.StateKey != nil && (ev.Type == "m.room.create" || ev.Type == "m.room.power_levels") {
			auth[ev.Type] = evID
		}
	}
	if len(sj.AuthChain) == 0 || auth["m.room.create"] == "" {
		t.Fatalf("send_join: no auth chain or create event: %d state, %d auth", len(sj.State), len(sj.AuthChain))
	}
	members := hs1.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/joined_members"), alice.Token, nil)
	if !strings.Contains(string(members.Body), string(carol)) {
		t.Fatalf("hs1 does not list carol: %s", members.Body)
	}

	// hs1 -> peer: alice's message arrives through a transaction mautrix
	// authenticated, signed as mautrix checks.
	msgID := hs1.SendText(alice, room, "hello mautrix")
	var last id.EventID
	deadline := time.After(20 * time.Second)
	for last != id.EventID(msgID) {
		select {
		case raw := <-p.received:
			var ev pdu.PDU
			if err := jsonv2.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("received PDU: %v", err)
			}
			if err := ev.VerifySignature(id.RoomV10, "hs1.test", p.keyOf(ctx)); err != nil {
				t.Fatalf("received PDU signature fails mautrix's check: %v", err)
			}
			if !ev.VerifyContentHash() {
				t.Fatalf("received PDU content hash fails mautrix's check")
			}
			last, _ = ev.GetEventID(id.RoomV10)
		case <-deadline:
			t.Fatalf("the peer never received %s", msgID)
		}
	}

	// peer -> hs1: a message signed by mautrix, sent in a transaction.
	msg := pdu.PDU{
		Type: "m.room.message", RoomID: id.RoomID(room), Sender: carol, Depth: 100,
		Content:        []byte(`{"msgtype":"m.text","body":"hello from mautrix"}`),
		PrevEvents:     []id.EventID{last},
		AuthEvents:     []id.EventID{auth["m.room.create"], auth["m.room.power_levels"], joinID},
		OriginServerTS: time.Now().UnixMilli(),
	}
	msgRaw, sentID := p.sign(&msg)
	resp, err := p.client.SendTransaction(ctx, &federation.ReqSendTransaction{
		Destination: "hs1.test", TxnID: "peer1", Origin: peerName, OriginServerTS: jsontimeNow(), PDUs: []federation.PDU{msgRaw},
	})
	if err != nil {
		t.Fatalf("send transaction: %v", err)
	}
	if r, ok := resp.PDUs[sentID]; !ok || r.Error != "" {
		t.Fatalf("hs1 answered %+v for %s", resp.PDUs, sentID)
	}
	msgs := hs1.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=5"), alice.Token, nil)
	if !strings.Contains(string(msgs.Body), "hello from mautrix") {
		t.Fatalf("alice does not see the peer's message: %s", msgs.Body)
	}

	// A gap: the peer sends only the second of two new events; hs1 asks
	// for the first with get_missing_events and stores both, in order.
	first := pdu.PDU{
		Type: "m.room.message", RoomID: id.RoomID(room), Sender: carol, Depth: 101,
		Content: []byte(`{"msgtype":"m.text","body":"held back"}`), PrevEvents: []id.EventID{sentID},
		AuthEvents: msg.AuthEvents, OriginServerTS: time.Now().UnixMilli(),
	}
	firstRaw, firstID := p.sign(&first)
	second := pdu.PDU{
		Type: "m.room.message", RoomID: id.RoomID(room), Sender: carol, Depth: 102,
		Content: []byte(`{"msgtype":"m.text","body":"after the gap"}`), PrevEvents: []id.EventID{firstID},
		AuthEvents: msg.AuthEvents, OriginServerTS: time.Now().UnixMilli(),
	}
	secondRaw, secondID := p.sign(&second)
	p.mu.Lock()
	p.held = append(p.held, firstRaw)
	p.mu.Unlock()
	resp, err = p.client.SendTransaction(ctx, &federation.ReqSendTransaction{
		Destination: "hs1.test", TxnID: "peer2", Origin: peerName, OriginServerTS: jsontimeNow(), PDUs: []federation.PDU{secondRaw},
	})
	if err != nil || resp.PDUs[secondID].Error != "" {
		t.Fatalf("send transaction with a gap: %v %+v", err, resp)
	}
	msgs = hs1.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=3"), alice.Token, nil)
	body := string(msgs.Body)
	gap, after := strings.Index(body, "held back"), strings.Index(body, "after the gap")
	if gap < 0 || after < 0 || after > gap { // newest first
		t.Fatalf("hs1 did not fill the gap in order: %s", msgs.Body)
	}

	// And hs1 serves get_missing_events to mautrix's client.
	missing, err := p.client.GetMissingEvents(ctx, &federation.ReqGetMissingEvents{
		ServerName: "hs1.test", RoomID: id.RoomID(room), EarliestEvents: []id.EventID{sentID}, LatestEvents: []id.EventID{secondID}, Limit: 10,
	})
	if err != nil || len(missing.Events) != 1 {
		t.Fatalf("get_missing_events from hs1: %v %+v", err, missing)
	}
	var back pdu.PDU
	if err := jsonv2.Unmarshal(missing.Events[0], &back); err != nil {
		t.Fatal(err)
	}
	if backID, _ := back.GetEventID(id.RoomV10); backID != firstID {
		t.Errorf("get_missing_events answered %s, want %s", backID, firstID)
	}

	// History and state, read by mautrix's client: the state before the
	// peer's first message holds carol's join; /state agrees with
	// /state_ids; the auth chain of the join leads to the create event;
	// backfill walks back from the last message.
	ids, err := p.client.GetStateIDs(ctx, "hs1.test", id.RoomID(room), sentID)
	if err != nil || !slices.Contains(ids.PDUs, joinID) || len(ids.AuthChain) == 0 {
		t.Fatalf("state_ids: %v %+v", err, ids)
	}
	full, err := p.client.GetState(ctx, "hs1.test", id.RoomID(room), sentID)
	if err != nil || len(full.PDUs) != len(ids.PDUs) {
		t.Fatalf("state: %v, %d events for %d IDs", err, len(full.PDUs), len(ids.PDUs))
	}
	chain, err := p.client.GetEventAuthChain(ctx, "hs1.test", id.RoomID(room), joinID)
	if err != nil || !strings.Contains(string(jsonOf(chain.AuthChain)), `"m.room.create"`) {
		t.Fatalf("event_auth: %v", err)
	}
	bf, err := p.client.Backfill(ctx, &federation.ReqBackfill{ServerName: "hs1.test", RoomID: id.RoomID(room), Limit: 3, BackfillFrom: []id.EventID{secondID}})
	if err != nil || len(bf.PDUs) != 3 || !strings.Contains(string(jsonOf(bf.PDUs)), "held back") {
		t.Fatalf("backfill: %v %+v", err, bf)
	}

	// timestamp_to_event, through mautrix's client: the message sent
	// first after the peer joined.
	tte, err := p.client.TimestampToEvent(ctx, "hs1.test", id.RoomID(room), time.UnixMilli(join.OriginServerTS), mautrix.DirectionForward)
	if err != nil || tte.EventID == "" {
		t.Fatalf("timestamp_to_event: %v %+v", err, tte)
	}

	testAuthChains(t, ctx, p, hs1, alice, room, carol, auth["m.room.create"], auth["m.room.power_levels"], joinID, secondID)
}

// An event whose auth events hs1 lacks: hs1 takes the peer's auth chain
// through /event_auth, checks each event of it, and then accepts the
// event; query_auth tells the peer which of its auth events hs1 rejects.
func testAuthChains(t *testing.T, ctx context.Context, p *peer, hs1 *testserver.Server, alice testserver.User, room string, carol id.UserID, create, pl, join, last id.EventID) {
	rename := pdu.PDU{
		Type: "m.room.member", RoomID: id.RoomID(room), Sender: carol, StateKey: ptrTo(string(carol)), Depth: 110,
		Content: []byte(`{"membership":"join","displayname":"Carol"}`), PrevEvents: []id.EventID{last},
		AuthEvents: []id.EventID{create, pl, join}, OriginServerTS: time.Now().UnixMilli(),
	}
	renameRaw, renameID := p.sign(&rename)
	msg := pdu.PDU{
		Type: "m.room.message", RoomID: id.RoomID(room), Sender: carol, Depth: 111,
		Content: []byte(`{"msgtype":"m.text","body":"after a rename hs1 never saw"}`), PrevEvents: []id.EventID{last},
		AuthEvents: []id.EventID{create, pl, renameID}, OriginServerTS: time.Now().UnixMilli(),
	}
	msgRaw, msgID := p.sign(&msg)
	p.mu.Lock()
	p.authChain = []json.RawMessage{renameRaw}
	p.mu.Unlock()
	resp, err := p.client.SendTransaction(ctx, &federation.ReqSendTransaction{
		Destination: "hs1.test", TxnID: "peer3", Origin: peerName, OriginServerTS: jsontimeNow(), PDUs: []federation.PDU{msgRaw},
	})
	if err != nil || resp.PDUs[msgID].Error != "" {
		t.Fatalf("event with unknown auth events: %v %+v", err, resp)
	}
	if !strings.Contains(string(hs1.MustDo(http.StatusOK, "GET", testserver.RoomPath(room, "/messages?dir=b&limit=3"), alice.Token, nil).Body), "never saw") {
		t.Fatal("hs1 did not accept the event after fetching its auth chain")
	}

	// query_auth: carol, at power 0, cannot change the power levels; hs1
	// rejects that event of the peer's chain and says so.
	bogusPL := pdu.PDU{
		Type: "m.room.power_levels", RoomID: id.RoomID(room), Sender: carol, StateKey: ptrTo(""), Depth: 112,
		Content: []byte(`{"users":{"` + string(carol) + `":100}}`), PrevEvents: []id.EventID{msgID},
		AuthEvents: []id.EventID{create, pl, renameID}, OriginServerTS: time.Now().UnixMilli(),
	}
	bogusRaw, bogusID := p.sign(&bogusPL)
	var qa struct {
		AuthChain []json.RawMessage        `json:"auth_chain"`
		Missing   []id.EventID             `json:"missing"`
		Rejects   map[id.EventID]rejection `json:"rejects"`
	}
	_, _, err = p.client.MakeFullRequest(ctx, federation.RequestParams{
		ServerName: "hs1.test", Method: http.MethodPost, Path: federation.URLPath{"v1", "query_auth", room, msgID},
		Authenticate: true, RequestJSON: map[string]any{"auth_chain": []json.RawMessage{renameRaw, bogusRaw}, "missing": []string{}, "rejects": map[string]any{}},
		ResponseJSON: &qa,
	})
	if err != nil {
		t.Fatalf("query_auth: %v", err)
	}
	if qa.Rejects[bogusID].Reason != "auth_error" || len(qa.AuthChain) == 0 || !slices.Contains(qa.Missing, create) {
		t.Fatalf("query_auth answered %+v", qa)
	}
}

type rejection struct {
	Reason string `json:"reason"`
}

func ptrTo[T any](v T) *T { return &v }

func jsonOf(v any) []byte {
	data, _ := json.Marshal(v)
	return data
}
