package server

import (
	"log/slog"

	"homeserver/accountdata"
	"homeserver/accounts"
	"homeserver/adminapi"
	"homeserver/config"
	"homeserver/notices"
	"homeserver/rooms"
)

// serverNoticesUser is the system user of server_notices, "" when off.
func serverNoticesUser(cfg *config.Config) string {
	if cfg.ServerNotices == nil {
		return ""
	}
	return "@" + cfg.ServerNotices.SystemMXIDLocalpart + ":" + cfg.ServerName
}

// serverNotices returns the sender of server notices, nil when off (an
// interface holding a nil *notices.Service would not be nil).
func serverNotices(cfg *config.Config, acc *accounts.Service, rms *rooms.Service, tags *accountdata.Service, log *slog.Logger) adminapi.NoticeSender {
	n := cfg.ServerNotices
	if n == nil {
		return nil
	}
	return notices.New(notices.Config{
		ServerName: cfg.ServerName, Localpart: n.SystemMXIDLocalpart,
		DisplayName: n.SystemMXIDDisplayName, AvatarURL: n.SystemMXIDAvatarURL,
		RoomName: n.RoomName, RoomAvatarURL: n.RoomAvatarURL, RoomTopic: n.RoomTopic,
		AutoJoin: n.AutoJoin, Logger: log,
	}, acc, rms, tags)
}
