//go:build goolm

package cryptointerop_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"homeserver/internal/testserver"
)

const (
	alicePassword = "alice-password"
	bobPassword   = "bob-password"
)

// twoUsersInEncryptedRoom registers alice and bob with one device and an
// OlmMachine each, and puts them in a room alice creates with
// m.room.encryption.
func twoUsersInEncryptedRoom(t *testing.T) (s *testserver.Server, alice, bob *client, room id.RoomID) {
	t.Helper()
	s = testserver.Start(t, "")
	alice = newClient(t, s, s.Register("alice", alicePassword))
	bob = newClient(t, s, s.Register("bob", bobPassword))
	for _, c := range []*client{alice, bob} {
		// mautrix uploaded half of its 100 one-time keys.
		if c.otkCount != 50 {
			t.Fatalf("%s: device_one_time_keys_count.signed_curve25519 = %d after uploading 50", c.user.DeviceID, c.otkCount)
		}
	}
	room = alice.createEncryptedRoom(bob.userID())
	bob.join(room)
	// Sharing an encrypted room with bob for the first time puts him in
	// alice's device_lists.changed: her client must (re)fetch his devices.
	alice.syncUntil("bob's join and bob in device_lists.changed", func(*mautrix.RespSync) bool {
		return alice.state.membership(room, bob.userID()) == event.MembershipJoin && alice.changed[bob.userID()]
	})
	return s, alice, bob, room
}

// a. alice's OlmMachine shares a Megolm session with bob's device over Olm
// (/keys/query, /keys/claim, /sendToDevice), encrypts a message with it and
// sends it; bob's machine gets the room key from his /sync to_device and
// decrypts the message.
func TestMegolmMessageBetweenUsers(t *testing.T) {
	_, alice, bob, room := twoUsersInEncryptedRoom(t)

	const text = "hello bob, this is end-to-end encrypted"
	sent := alice.sendEncrypted(room, text)

	// bob has not synced since alice claimed one of his one-time keys and
	// sent the Olm-encrypted room key: his next /sync has both.
	resp := bob.sync(pollTimeout)
	if n := resp.DeviceOTKCount.SignedCurve25519; n != 49 {
		t.Errorf("bob's device_one_time_keys_count.signed_curve25519 = %d after alice claimed one of 50, want 49", n)
	}
	if !slices.ContainsFunc(resp.ToDevice.Events, func(evt *event.Event) bool {
		return evt.Type == event.ToDeviceEncrypted && evt.Sender == alice.userID()
	}) {
		t.Errorf("bob's /sync has no m.room.encrypted to-device event from alice: %+v", resp.ToDevice.Events)
	}

	dec := bob.decrypt(sent)
	if got := messageBody(t, dec); got != text {
		t.Fatalf("bob decrypted %q, want %q", got, text)
	}
	if dec.Sender != alice.userID() || dec.RoomID != room {
		t.Errorf("decrypted event from %s in %s, want %s in %s", dec.Sender, dec.RoomID, alice.userID(), room)
	}
	// The session's keys match the device keys /keys/query serves for
	// alice's device (which is not cross-signed): anything else would be an
	// unknown device or a key mismatch.
	if dec.Mautrix.TrustState != id.TrustStateUnset || dec.Mautrix.TrustSource == nil || dec.Mautrix.TrustSource.DeviceID != alice.deviceID() {
		t.Errorf("trust of alice's message: %s from %+v, want %s from device %s",
			dec.Mautrix.TrustState, dec.Mautrix.TrustSource, id.TrustStateUnset, alice.deviceID())
	}

	// On seeing 49, bob's machine uploaded a replacement one-time key.
	if n := bob.sync(0).DeviceOTKCount.SignedCurve25519; n != 50 {
		t.Errorf("bob's device_one_time_keys_count.signed_curve25519 = %d after his machine topped it up, want 50", n)
	}
}

// b. bob logs in on a second device; alice's client learns of it from
// device_lists.changed in /sync, and her next message's room key reaches
// the new device too (through /keys/claim and to-device).
func TestNewDeviceReceivesRoomKey(t *testing.T) {
	s, alice, bob, room := twoUsersInEncryptedRoom(t)

	first := alice.sendEncrypted(room, "before bob's second device")
	if got := messageBody(t, bob.decrypt(first)); got != "before bob's second device" {
		t.Fatalf("bob decrypted %q", got)
	}
	before := alice.since

	bob2 := newClient(t, s, s.Login("bob", bobPassword))
	if enc, _ := bob2.state.IsEncrypted(t.Context(), room); !enc {
		t.Fatalf("bob's new device: the room is not encrypted in its initial /sync state")
	}
	alice.syncUntil("bob in device_lists.changed after his new device", func(resp *mautrix.RespSync) bool {
		return slices.Contains(resp.DeviceLists.Changed, bob.userID())
	})
	// Handling that /sync, alice's machine fetched bob's device list.
	if dev, err := alice.mach.CryptoStore.GetDevice(t.Context(), bob.userID(), bob2.deviceID()); err != nil || dev == nil {
		t.Fatalf("alice's machine does not know bob's new device %s after the device list change: %v", bob2.deviceID(), err)
	}
	// /keys/changes between alice's two sync tokens says the same.
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(before)+"&to="+url.QueryEscape(alice.since), alice.user.Token, nil)
	var changes mautrix.RespKeyChanges
	if err := json.Unmarshal(r.Body, &changes); err != nil || !slices.Contains(changes.Changed, bob.userID()) {
		t.Errorf("GET /keys/changes from %s to %s: %s (%v), want bob in changed", before, alice.since, r.Body, err)
	}

	const text = "after bob's second device"
	second := alice.sendEncrypted(room, text)
	if got := messageBody(t, bob2.decrypt(second)); got != text {
		t.Fatalf("bob's new device decrypted %q, want %q", got, text)
	}
	if got := messageBody(t, bob.decrypt(second)); got != text {
		t.Fatalf("bob's first device decrypted %q, want %q", got, text)
	}

	// Once bob has left the only encrypted room they shared, he is in
	// alice's device_lists.left.
	if _, err := bob.cli.LeaveRoom(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	alice.syncUntil("bob in device_lists.left after he left", func(*mautrix.RespSync) bool {
		return alice.left[bob.userID()]
	})
}

// c. alice's machine creates and publishes cross-signing keys (no UIA for
// the first upload), signs her device and master key; bob's machine, from
// /keys/query alone, sees her master key and that her device is signed by
// her self-signing key. Replacing the keys needs her password.
func TestCrossSigning(t *testing.T) {
	s := testserver.Start(t, "")
	alice := newClient(t, s, s.Register("alice", alicePassword))
	bob := newClient(t, s, s.Register("bob", bobPassword))
	ctx := t.Context()

	uiaCalls := 0
	_, keys, err := alice.mach.GenerateAndUploadCrossSigningKeys(ctx, func(r *mautrix.RespUserInteractive) any {
		uiaCalls++
		return passwordAuth(alice, alicePassword)(r)
	}, "")
	if err != nil {
		t.Fatalf("generating and uploading cross-signing keys: %v", err)
	}
	if uiaCalls != 0 {
		t.Errorf("the first cross-signing key upload asked for user-interactive auth")
	}
	if err := alice.mach.SignOwnDevice(ctx, alice.mach.OwnIdentity()); err != nil {
		t.Fatalf("signing alice's device with her self-signing key: %v", err)
	}
	// The master key already carries this device's signature from the
	// upload above; mautrix uploads it again (as its own
	// GenerateAndVerifyWithRecoveryKey does), which is no failure.
	if err := alice.mach.SignOwnMasterKey(ctx); err != nil {
		t.Errorf("signing alice's master key with her device: %v", err)
	}

	dev := fetchDevice(t, bob, alice)
	pub, err := bob.mach.GetCrossSigningPublicKeys(ctx, alice.userID())
	if err != nil || pub == nil {
		t.Fatalf("bob's machine has no cross-signing keys of alice: %v", err)
	}
	// The user-signing key is only ever shown to its owner.
	if want := (crypto.CrossSigningPublicKeysCache{MasterKey: keys.MasterKey.PublicKey(), SelfSigningKey: keys.SelfSigningKey.PublicKey()}); *pub != want {
		t.Fatalf("bob sees alice's cross-signing keys %+v, want %+v", *pub, want)
	}
	// mautrix stores a signature only after verifying it.
	if ok, _ := bob.mach.CryptoStore.IsKeySignedBy(ctx, alice.userID(), pub.SelfSigningKey, alice.userID(), pub.MasterKey); !ok {
		t.Errorf("alice's self-signing key is not signed by her master key in bob's view")
	}
	if ok, _ := bob.mach.CryptoStore.IsKeySignedBy(ctx, alice.userID(), pub.MasterKey, alice.userID(), dev.SigningKey); !ok {
		t.Errorf("alice's master key does not carry her device's signature in bob's view")
	}
	// Master key trusted on first use, device signed by its self-signing key.
	if trust, err := bob.mach.ResolveTrustContext(ctx, dev); err != nil || trust != id.TrustStateCrossSignedTOFU {
		t.Fatalf("bob's trust in alice's device: %s (%v), want %s", trust, err, id.TrustStateCrossSignedTOFU)
	}

	// Replacing the keys: without auth, the server answers the UIA challenge.
	newKeys, err := alice.mach.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	var challenge *mautrix.RespUserInteractive
	err = alice.mach.PublishCrossSigningKeys(ctx, newKeys, func(r *mautrix.RespUserInteractive) any {
		challenge = r
		return nil // give up, as a user who cancels the password prompt
	})
	if status := httpStatus(err); status != http.StatusUnauthorized {
		t.Fatalf("replacing cross-signing keys without auth: status %d (%v), want 401", status, err)
	}
	if challenge == nil || challenge.Session == "" || !challenge.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("replacing cross-signing keys: UIA challenge %+v, want a session and an %s flow", challenge, mautrix.AuthTypePassword)
	}
	// A wrong password is refused.
	err = alice.mach.PublishCrossSigningKeys(ctx, newKeys, passwordAuth(alice, "not-"+alicePassword))
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || !httpErr.IsStatus(http.StatusUnauthorized) || httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("replacing cross-signing keys with a wrong password: %v, want 401 M_FORBIDDEN", err)
	}
	// The right one is accepted.
	uiaCalls = 0
	err = alice.mach.PublishCrossSigningKeys(ctx, newKeys, func(r *mautrix.RespUserInteractive) any {
		uiaCalls++
		return passwordAuth(alice, alicePassword)(r)
	})
	if err != nil || uiaCalls != 1 {
		t.Fatalf("replacing cross-signing keys with the password: %v after %d UIA round(s), want success after 1", err, uiaCalls)
	}
	if err := alice.mach.SignOwnDevice(ctx, alice.mach.OwnIdentity()); err != nil {
		t.Fatalf("signing alice's device with her new self-signing key: %v", err)
	}

	dev = fetchDevice(t, bob, alice)
	pub, err = bob.mach.GetCrossSigningPublicKeys(ctx, alice.userID())
	if want := (crypto.CrossSigningPublicKeysCache{MasterKey: newKeys.MasterKey.PublicKey(), SelfSigningKey: newKeys.SelfSigningKey.PublicKey()}); err != nil || pub == nil || *pub != want {
		t.Fatalf("bob sees alice's cross-signing keys %+v (%v) after the replacement, want %+v", pub, err, want)
	}
	// Cross-signed by the new keys, but not the master key bob first saw.
	if trust, err := bob.mach.ResolveTrustContext(ctx, dev); err != nil || trust != id.TrustStateCrossSignedUntrusted {
		t.Fatalf("bob's trust in alice's device after her key change: %s (%v), want %s", trust, err, id.TrustStateCrossSignedUntrusted)
	}
}

// d. alice backs up her Megolm session encrypted to a backup key
// (m.megolm_backup.v1.curve25519-aes-sha2); a new device of hers, with an
// empty store, restores it from /room_keys and decrypts her earlier message.
func TestKeyBackupRoundTrip(t *testing.T) {
	s := testserver.Start(t, "")
	alice := newClient(t, s, s.Register("alice", alicePassword))
	ctx := t.Context()
	room := alice.createEncryptedRoom()
	const text = "read me again from the key backup"
	sent := alice.sendEncrypted(room, text)

	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	authData := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))}
	sig, err := alice.mach.GetAccount().SignJSON(authData)
	if err != nil {
		t.Fatal(err)
	}
	authData.Signatures = signatures.NewSingleSignature(alice.userID(), id.KeyAlgorithmEd25519, alice.deviceID().String(), sig)
	created, err := alice.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData,
	})
	if err != nil {
		t.Fatalf("creating a key backup version: %v", err)
	}
	if err := alice.mach.SetKeyBackupVersion(ctx, created.Version); err != nil {
		t.Fatal(err)
	}

	sessions, err := alice.mach.CryptoStore.GetGroupSessionsWithoutKeyBackupVersion(ctx, created.Version).AsList()
	if err != nil || len(sessions) == 0 {
		t.Fatalf("alice's inbound Megolm sessions: %d (%v)", len(sessions), err)
	}
	req := &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}}
	for _, igs := range sessions {
		exported, err := igs.Internal.Export(igs.Internal.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		enc, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm:          id.AlgorithmMegolmV1,
			ForwardingKeyChain: igs.ForwardingChains,
			SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: igs.SigningKey},
			SenderKey:          igs.SenderKey,
			SessionKey:         string(exported),
			SharedHistory:      igs.SharedHistory,
		})
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(enc)
		if err != nil {
			t.Fatal(err)
		}
		roomKeys := req.Rooms[igs.RoomID]
		if roomKeys.Sessions == nil {
			roomKeys.Sessions = map[id.SessionID]mautrix.ReqKeyBackupData{}
		}
		roomKeys.Sessions[igs.ID()] = mautrix.ReqKeyBackupData{
			FirstMessageIndex: int(igs.Internal.FirstKnownIndex()),
			ForwardedCount:    len(igs.ForwardingChains),
			IsVerified:        true,
			SessionData:       data,
		}
		req.Rooms[igs.RoomID] = roomKeys
	}
	put, err := alice.cli.PutKeysInBackup(ctx, created.Version, req)
	if err != nil {
		t.Fatalf("uploading keys to backup version %s: %v", created.Version, err)
	}
	if put.Count != len(sessions) || put.ETag == "" {
		t.Errorf("PUT /room_keys/keys: count %d etag %q, want count %d and an etag", put.Count, put.ETag, len(sessions))
	}

	// A new device of alice, knowing nothing but the backup key.
	alice2 := newClient(t, s, s.Login("alice", alicePassword))
	evt, err := alice2.cli.GetEvent(ctx, room, sent)
	if err != nil {
		t.Fatalf("fetching alice's message: %v", err)
	}
	evt.Type.Class = event.MessageEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		t.Fatalf("parsing %s: %v", evt.Type.Type, err)
	}
	if _, err := alice2.mach.DecryptMegolmEvent(ctx, evt); !errors.Is(err, crypto.ErrNoSessionFound) {
		t.Fatalf("the new device decrypting before the restore: %v, want %v", err, crypto.ErrNoSessionFound)
	}

	info, err := alice2.cli.GetKeyBackupLatestVersion(ctx)
	if err != nil {
		t.Fatalf("GET /room_keys/version: %v", err)
	}
	if info.Version != created.Version || info.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 || info.Count != len(sessions) || info.ETag != put.ETag {
		t.Errorf("latest backup: version %s %s count %d etag %q, want %s %s count %d etag %q",
			info.Version, info.Algorithm, info.Count, info.ETag, created.Version, id.KeyBackupAlgorithmMegolmBackupV1, len(sessions), put.ETag)
	}
	version, err := alice2.mach.DownloadAndStoreLatestKeyBackup(ctx, backupKey)
	if err != nil || version != created.Version {
		t.Fatalf("restoring the key backup: version %q (%v), want %q", version, err, created.Version)
	}
	// DownloadAndStoreLatestKeyBackup only logs keys it could not import.
	enc := evt.Content.AsEncrypted()
	if igs, err := alice2.mach.CryptoStore.GetGroupSession(ctx, room, enc.SessionID); err != nil || igs == nil {
		t.Fatalf("session %s not restored from the backup: %v", enc.SessionID, err)
	}
	dec, err := alice2.mach.DecryptMegolmEvent(ctx, evt)
	if err != nil {
		t.Fatalf("the new device decrypting with the restored key: %v", err)
	}
	if got := messageBody(t, dec); got != text {
		t.Fatalf("decrypted %q, want %q", got, text)
	}
	if dec.Mautrix.TrustState != id.TrustStateBackup {
		t.Errorf("trust of a key from backup: %s, want %s", dec.Mautrix.TrustState, id.TrustStateBackup)
	}
}

// passwordAuth answers the m.login.password UIA stage the way mautrix's
// GenerateAndUploadCrossSigningKeysWithPassword does.
func passwordAuth(c *client, password string) mautrix.UIACallback {
	return func(r *mautrix.RespUserInteractive) any {
		return &mautrix.ReqUIAuthLogin{
			BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: r.Session},
			User:         string(c.userID()),
			Password:     password,
		}
	}
}

// fetchDevice has by's machine query of's keys (/keys/query) and returns
// of's device as it validated it.
func fetchDevice(t *testing.T, by, of *client) *id.Device {
	t.Helper()
	devices, err := by.mach.FetchKeys(t.Context(), []id.UserID{of.userID()}, true)
	if err != nil {
		t.Fatalf("%s: /keys/query for %s: %v", by.user.DeviceID, of.userID(), err)
	}
	dev := devices[of.userID()][of.deviceID()]
	if dev == nil {
		t.Fatalf("%s: /keys/query has no valid device %s of %s: %+v", by.user.DeviceID, of.deviceID(), of.userID(), devices)
	}
	return dev
}

// httpStatus is the HTTP status of a mautrix request error, or 0.
func httpStatus(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}
