package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"homeserver/clientapi"
	"homeserver/config"
	"homeserver/federation/transport"
	"homeserver/media"
	"homeserver/storage"
)

// newMedia builds the content repository and its HTTP handlers, which
// authenticate through the client API.
// Other servers' media is fetched over federation, unless this server
// reaches no other.
func newMedia(cfg *config.Config, db *storage.DB, client *clientapi.API, fed *fedParts, log *slog.Logger) (*media.HTTP, error) {
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
	// Remote media redirects go where the origin says: the same blocklist
	// as federation's requests.
	guard, err := outboundGuard(cfg)
	if err != nil {
		return nil, err
	}
	svc, err := media.New(media.Config{
		ServerName:           cfg.ServerName,
		StorePath:            cfg.MediaStorePath,
		MaxUploadSize:        int64(cfg.MaxUploadSize),
		MaxImagePixels:       int64(cfg.MaxImagePixels),
		ThumbnailSizes:       sizes,
		DynamicThumbnails:    cfg.DynamicThumbnails,
		AuthenticatedMedia:   cfg.EnableAuthenticatedMedia,
		RcThumbnailPerSecond: cfg.RcMediaThumbnail.PerSecond,
		RcThumbnailBurst:     cfg.RcMediaThumbnail.BurstCount,
		RedirectGuard:        guard,
		RedirectTimeout:      time.Duration(cfg.Federation.ClientTimeout),
		PendingLifetime:      24 * time.Hour,
		MaxPending:           5,
		UploadLimits:         limits,
		Preview:              preview,
		Logger:               log,
	}, db)
	if err != nil {
		return nil, err
	}
	if federates(cfg) {
		svc.SetRemote(remoteMedia{fed.client})
	}
	return media.NewHTTP(svc, media.HTTPConfig{
		Auth: client.RequireAuth,
		UserID: func(r *http.Request) string {
			if req := clientapi.RequesterOf(r); req != nil {
				return req.UserID
			}
			return ""
		},
		Requester: func(r *http.Request) string {
			if origin := transport.Origin(r.Context()); origin != "" {
				return "server " + origin
			}
			if req := clientapi.RequesterOf(r); req != nil {
				return req.UserID
			}
			return "address " + clientapi.ClientIP(r)
		},
		RcCreatePerSecond: cfg.RcMediaCreate.PerSecond,
		RcCreateBurst:     cfg.RcMediaCreate.BurstCount,
		Logger:            log,
	}), nil
}

// remoteMedia is the federation client as the content repository uses it:
// destinations it may not reach hold no media.
type remoteMedia struct{ c *transport.Client }

func (r remoteMedia) DoStream(ctx context.Context, method, destination, requestURI string, body any,
	read func(status int, header http.Header, body io.Reader) error) error {
	if !transport.ValidServerName(destination) {
		return fmt.Errorf("%w: invalid server name %q", media.ErrNotFound, destination)
	}
	err := r.c.DoStream(ctx, method, destination, requestURI, body, read)
	if errors.Is(err, transport.ErrNotWhitelisted) || errors.Is(err, transport.ErrSelf) {
		return fmt.Errorf("%w: %w", media.ErrNotFound, err)
	}
	return err
}
