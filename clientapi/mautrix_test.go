package clientapi_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"homeserver/internal/testserver"
)

// A real third-party client library (mautrix-go) registers, logs in,
// creates a room, invites, joins, chats and syncs against this server.
func TestMautrixClientInterop(t *testing.T) {
	s := testserver.Start(t, "")
	ctx := context.Background()

	alice, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "pw"})
	if err != nil {
		t.Fatalf("mautrix RegisterDummy: %v", err)
	}
	alice.SetCredentials(reg.UserID, reg.AccessToken)

	bob, _ := mautrix.NewClient(s.URL, "", "")
	if _, err := bob.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "bob", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	login, err := bob.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"},
		Password:   "pw", InitialDeviceDisplayName: "mautrix", StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("mautrix Login: %v", err)
	}
	who, err := bob.Whoami(ctx)
	if err != nil || who.UserID != login.UserID || who.DeviceID != login.DeviceID {
		t.Fatalf("whoami: %+v %v", who, err)
	}
	if err := alice.SetDisplayName(ctx, "Alice"); err != nil {
		t.Fatal(err)
	}

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Interop", Preset: "private_chat", Invite: []id.UserID{login.UserID}})
	if err != nil {
		t.Fatalf("mautrix CreateRoom: %v", err)
	}
	first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatalf("mautrix initial sync: %v", err)
	}
	if _, invited := first.Rooms.Invite[room.RoomID]; !invited {
		t.Fatalf("invite not in bob's sync: %+v", first.Rooms)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("mautrix join: %v", err)
	}
	sent, err := alice.SendText(ctx, room.RoomID, "hello from mautrix")
	if err != nil {
		t.Fatalf("mautrix SendText: %v", err)
	}

	// Bob's incremental syncs deliver the message.
	since, found := first.NextBatch, false
	for range 5 {
		resp, err := bob.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("mautrix sync: %v", err)
		}
		if jr := resp.Rooms.Join[room.RoomID]; jr != nil {
			for _, ev := range jr.Timeline.Events {
				if ev.ID == sent.EventID {
					if err := ev.Content.ParseRaw(ev.Type); err != nil {
						t.Fatal(err)
					}
					if body := ev.Content.AsMessage().Body; body != "hello from mautrix" {
						t.Fatalf("body %q", body)
					}
					found = true
				}
			}
		}
		since = resp.NextBatch
		if found {
			break
		}
	}
	if !found {
		t.Fatal("message never reached bob's sync")
	}
	msgs, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 5)
	if err != nil || len(msgs.Chunk) == 0 || msgs.Chunk[0].ID != sent.EventID {
		t.Fatalf("mautrix Messages: %v %+v", err, msgs)
	}
	devs, err := bob.GetDevicesInfo(ctx)
	if err != nil || len(devs.Devices) != 2 {
		t.Fatalf("devices: %+v %v", devs, err)
	}
}
