package server

import (
	"log/slog"
	"net/http"
	"time"

	"homeserver/clientapi"
	"homeserver/config"
	"homeserver/media"
	"homeserver/storage"
)

// newMedia builds the content repository and its HTTP handlers, which
// authenticate through the client API.
func newMedia(cfg *config.Config, db *storage.DB, client *clientapi.API, log *slog.Logger) (*media.HTTP, error) {
	sizes := make([]media.ThumbnailSize, len(cfg.ThumbnailSizes))
	for i, t := range cfg.ThumbnailSizes {
		sizes[i] = media.ThumbnailSize{Width: t.Width, Height: t.Height, Method: t.Method}
	}
	svc, err := media.New(media.Config{
		ServerName:      cfg.ServerName,
		StorePath:       cfg.MediaStorePath,
		MaxUploadSize:   int64(cfg.MaxUploadSize),
		MaxImagePixels:  int64(cfg.MaxImagePixels),
		ThumbnailSizes:  sizes,
		PendingLifetime: 24 * time.Hour,
		MaxPending:      5,
		Logger:          log,
	}, db)
	if err != nil {
		return nil, err
	}
	return media.NewHTTP(svc, media.HTTPConfig{
		Auth: client.RequireAuth,
		UserID: func(r *http.Request) string {
			if req := clientapi.RequesterOf(r); req != nil {
				return req.UserID
			}
			return ""
		},
		RcCreatePerSecond: cfg.RcMediaCreate.PerSecond,
		RcCreateBurst:     cfg.RcMediaCreate.BurstCount,
		Logger:            log,
	}), nil
}
