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
	limits := make([]media.UploadLimit, len(cfg.MediaUploadLimits))
	for i, l := range cfg.MediaUploadLimits {
		limits[i] = media.UploadLimit{Period: time.Duration(l.TimePeriod), MaxSize: int64(l.MaxSize)}
	}
	preview := media.PreviewConfig{
		Enabled:        cfg.URLPreviewEnabled,
		MaxSpiderSize:  int64(cfg.MaxSpiderSize),
		AcceptLanguage: cfg.URLPreviewAcceptLanguage,
	}
	// The ranges were validated with the configuration.
	for _, r := range cfg.URLPreviewIPRangeBlacklist {
		if p, err := config.ParseIPRange(r); err == nil {
			preview.IPBlacklist = append(preview.IPBlacklist, p)
		}
	}
	for _, r := range cfg.URLPreviewIPRangeWhitelist {
		if p, err := config.ParseIPRange(r); err == nil {
			preview.IPWhitelist = append(preview.IPWhitelist, p)
		}
	}
	for _, entry := range cfg.URLPreviewURLBlacklist {
		rule := make(map[string]string, len(entry))
		for k, v := range entry {
			if s, ok := v.(string); ok {
				rule[k] = s
			}
		}
		preview.URLBlacklist = append(preview.URLBlacklist, rule)
	}
	svc, err := media.New(media.Config{
		ServerName:      cfg.ServerName,
		StorePath:       cfg.MediaStorePath,
		MaxUploadSize:   int64(cfg.MaxUploadSize),
		MaxImagePixels:  int64(cfg.MaxImagePixels),
		ThumbnailSizes:  sizes,
		PendingLifetime: 24 * time.Hour,
		MaxPending:      5,
		UploadLimits:    limits,
		Preview:         preview,
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
