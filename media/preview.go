package media

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/sync/singleflight"

	"homeserver/internal/redact"
	"homeserver/mxhttp"
	"homeserver/netguard"
)

// PreviewConfig configures URL previews (Synapse's url_preview_* keys).
type PreviewConfig struct {
	Enabled bool
	// IPBlacklist lists the ranges never connected to, unless also in
	// IPWhitelist. Unspecified addresses (0.0.0.0, ::) are always refused.
	IPBlacklist []netip.Prefix
	IPWhitelist []netip.Prefix
	// URLBlacklist entries map URL components to globs (or regular
	// expressions starting with "^"); a URL matching all of an entry's
	// components is refused.
	URLBlacklist   []map[string]string
	MaxSpiderSize  int64    // default 10 MiB
	AcceptLanguage []string // default ["en"]
	// Timeout bounds the fetching of one preview, its image included.
	// Default 30s.
	Timeout time.Duration
	// CacheSize bounds the previews kept in memory. Default 1000.
	CacheSize int
	// Resolver looks host names up; nil for net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
}

const (
	previewMaxRedirects = 5
	previewCacheTTL     = time.Hour
	previewMaxOGKeys    = 64
	previewMaxValue     = 2048 // bytes of one OpenGraph value
)

var errURLBlocked = errors.New("media: preview: URL blocked")

type previewer struct {
	svc    *Service
	cfg    PreviewConfig
	rules  []urlRule
	client *http.Client
	flight singleflight.Group

	mu    sync.Mutex
	lru   *list.List // of *previewEntry, most recent first
	cache map[string]*list.Element
}

type previewEntry struct {
	key     string
	og      map[string]any
	expires time.Time
}

// urlRule is one url_preview_url_blacklist entry, compiled.
type urlRule map[string]*regexp.Regexp

func newPreviewer(s *Service, cfg PreviewConfig) *previewer {
	if cfg.MaxSpiderSize <= 0 {
		cfg.MaxSpiderSize = 10 << 20
	}
	if len(cfg.AcceptLanguage) == 0 {
		cfg.AcceptLanguage = []string{"en"}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1000
	}
	p := &previewer{svc: s, cfg: cfg, lru: list.New(), cache: make(map[string]*list.Element)}
	for _, entry := range cfg.URLBlacklist {
		rule := urlRule{}
		for k, v := range entry {
			rule[k] = compileURLPattern(v)
		}
		p.rules = append(p.rules, rule)
	}
	// The guard resolves each host once, refuses it if any of its addresses
	// is blocked, and connects to the checked addresses only.
	guard := netguard.New(netguard.Options{Block: cfg.IPBlacklist, Allow: cfg.IPWhitelist, Resolver: cfg.Resolver})
	p.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would connect where we cannot check
			DialContext:           guard.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 20 * time.Second,
			MaxIdleConns:          16,
			IdleConnTimeout:       30 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= previewMaxRedirects {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to unsupported scheme %q", req.URL.Scheme)
			}
			if p.urlBlocked(req.URL) {
				return errURLBlocked
			}
			return nil
		},
	}
	return p
}

// compileURLPattern turns a url_preview_url_blacklist value into a regular
// expression: as written when it starts with "^", else a glob where * is
// any run of characters and ? any one character, matching the whole value.
func compileURLPattern(pat string) *regexp.Regexp {
	if strings.HasPrefix(pat, "^") {
		if re, err := regexp.Compile(pat); err == nil {
			return re
		}
		// Validated by config; an invalid pattern matches nothing rather
		// than everything.
		return regexp.MustCompile(`[^\s\S]`)
	}
	var b strings.Builder
	b.WriteString(`^(?s)`)
	for _, r := range pat {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

// urlComponent returns the named component of u as Python's urlparse
// (which Synapse's rules are written against) would.
func urlComponent(u *url.URL, name string) string {
	switch name {
	case "scheme":
		return u.Scheme
	case "netloc":
		if u.User != nil {
			return u.User.String() + "@" + u.Host
		}
		return u.Host
	case "hostname":
		return strings.ToLower(u.Hostname())
	case "port":
		return u.Port()
	case "path":
		p := u.EscapedPath()
		if i := strings.IndexByte(p, ';'); i >= 0 {
			return p[:i]
		}
		return p
	case "params":
		if i := strings.IndexByte(u.EscapedPath(), ';'); i >= 0 {
			return u.EscapedPath()[i+1:]
		}
		return ""
	case "query":
		return u.RawQuery
	case "fragment":
		return u.Fragment
	case "username":
		if u.User != nil {
			return u.User.Username()
		}
	case "password":
		if u.User != nil {
			pw, _ := u.User.Password()
			return pw
		}
	}
	return ""
}

func (p *previewer) urlBlocked(u *url.URL) bool {
	for _, rule := range p.rules {
		match := true
		for comp, re := range rule {
			if !re.MatchString(urlComponent(u, comp)) {
				match = false
				break
			}
		}
		if match && len(rule) > 0 {
			return true
		}
	}
	return false
}

// Preview returns the OpenGraph data of rawURL for userID. ts (ms, 0 for
// now) selects the cache bucket: previews are kept for an hour.
func (s *Service) Preview(ctx context.Context, userID, rawURL string, ts int64) (map[string]any, error) {
	p := s.prev
	if p == nil {
		return nil, mxhttp.Unrecognized("URL previews are disabled on this server")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, mxhttp.InvalidParam("url must be an absolute http or https URL")
	}
	if p.urlBlocked(u) {
		return nil, &mxhttp.Error{Status: http.StatusForbidden, Code: "M_UNKNOWN", Message: "URL blocked"}
	}
	now := s.now()
	if ts <= 0 {
		ts = now.UnixMilli()
	}
	key := strconv.FormatInt(ts/previewCacheTTL.Milliseconds(), 10) + " " + u.String()
	if og, ok := p.cached(key, now); ok {
		return og, nil
	}
	v, err, _ := p.flight.Do(key, func() (any, error) {
		// Shared by concurrent requesters, so not tied to one of them.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
		defer cancel()
		og, err := p.generate(fctx, userID, u)
		if err != nil {
			return nil, err
		}
		p.store(key, og, s.now())
		return og, nil
	})
	if err != nil {
		return nil, err
	}
	return copyOG(v.(map[string]any)), nil
}

func copyOG(og map[string]any) map[string]any {
	out := make(map[string]any, len(og))
	for k, v := range og {
		out[k] = v
	}
	return out
}

func (p *previewer) cached(key string, now time.Time) (map[string]any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	el, ok := p.cache[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*previewEntry)
	if now.After(e.expires) {
		p.lru.Remove(el)
		delete(p.cache, key)
		return nil, false
	}
	p.lru.MoveToFront(el)
	return copyOG(e.og), true
}

func (p *previewer) store(key string, og map[string]any, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.cache[key]; ok {
		p.lru.Remove(el)
	}
	p.cache[key] = p.lru.PushFront(&previewEntry{key: key, og: og, expires: now.Add(previewCacheTTL)})
	for p.lru.Len() > p.cfg.CacheSize {
		old := p.lru.Back()
		p.lru.Remove(old)
		delete(p.cache, old.Value.(*previewEntry).key)
	}
}

// fetched is one downloaded response.
type fetched struct {
	url         *url.URL // after redirects
	contentType string   // media type, lower case, without parameters
	body        []byte
}

func previewError(status int, code, format string, a ...any) *mxhttp.Error {
	return &mxhttp.Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// fetch downloads u through the checked client, up to max_spider_size.
func (p *previewer) fetch(ctx context.Context, u *url.URL, accept string) (*fetched, error) {
	target := *u
	target.Fragment, target.RawFragment = "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid URL")
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (compatible; homeserver URL preview)")
	req.Header.Set("Accept", accept)
	req.Header.Set("Accept-Language", strings.Join(p.cfg.AcceptLanguage, ", "))
	resp, err := p.client.Do(req)
	switch {
	case errors.Is(err, netguard.ErrBlocked):
		return nil, previewError(http.StatusForbidden, "M_UNKNOWN", "IP address blocked")
	case errors.Is(err, errURLBlocked):
		return nil, previewError(http.StatusForbidden, "M_UNKNOWN", "URL blocked")
	case err != nil:
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			return nil, previewError(http.StatusBadGateway, "M_UNKNOWN", "DNS resolution failure during URL preview generation")
		}
		return nil, previewError(http.StatusBadGateway, "M_UNKNOWN", "Failed to download content")
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, previewError(http.StatusBadGateway, "M_UNKNOWN", "Remote server answered %d", resp.StatusCode)
	}
	tooLarge := previewError(http.StatusBadGateway, "M_TOO_LARGE", "Content is larger than %d bytes", p.cfg.MaxSpiderSize)
	if resp.ContentLength > p.cfg.MaxSpiderSize {
		return nil, tooLarge
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxSpiderSize+1))
	if err != nil {
		return nil, previewError(http.StatusBadGateway, "M_UNKNOWN", "Failed to download content")
	}
	if int64(len(body)) > p.cfg.MaxSpiderSize {
		return nil, tooLarge
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return &fetched{url: resp.Request.URL, contentType: strings.ToLower(ct), body: body}, nil
}

// generate fetches u and builds its preview.
func (p *previewer) generate(ctx context.Context, userID string, u *url.URL) (map[string]any, error) {
	f, err := p.fetch(ctx, u, "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5")
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(f.contentType, "image/"):
		og := map[string]any{}
		if err := p.storeImage(ctx, f, og); err != nil {
			return nil, err
		}
		return og, nil
	case f.contentType == "text/html" || f.contentType == "application/xhtml+xml":
		og := parseOpenGraph(f.body)
		if img, ok := og["og:image"].(string); ok {
			delete(og, "og:image")
			p.previewImage(ctx, userID, f.url, img, og)
		}
		return og, nil
	}
	// Nothing to say about other content.
	return map[string]any{}, nil
}

// previewImage downloads the page's og:image (through the same checks) and
// stores it; on any failure the preview just has no image, so that clients
// are never pointed at a remote URL they would fetch themselves.
func (p *previewer) previewImage(ctx context.Context, userID string, base *url.URL, ref string, og map[string]any) {
	iu, err := base.Parse(ref)
	if err != nil || (iu.Scheme != "http" && iu.Scheme != "https") || p.urlBlocked(iu) {
		return
	}
	f, err := p.fetch(ctx, iu, "image/*")
	if err != nil || !strings.HasPrefix(f.contentType, "image/") {
		return
	}
	if err := p.storeImage(ctx, f, og); err != nil {
		p.svc.log.Debug("storing preview image", "url", redact.URL(iu.String()), "err", err)
	}
}

// storeImage stores an image as local media and describes it in og.
func (p *previewer) storeImage(ctx context.Context, f *fetched, og map[string]any) error {
	m, err := p.svc.Upload(ctx, Upload{
		// Fetched by the server, not uploaded by the user: nobody's quota.
		UserID: "", ContentType: f.contentType, Body: bytes.NewReader(f.body),
		Length: int64(len(f.body)), noQuota: true,
	})
	if err != nil {
		return err
	}
	og["og:image"] = p.svc.MXC(m.MediaID)
	og["og:image:type"] = m.ContentType
	og["matrix:image:size"] = m.Size
	delete(og, "og:image:width")
	delete(og, "og:image:height")
	if m.Width > 0 && m.Height > 0 {
		og["og:image:width"] = m.Width
		og["og:image:height"] = m.Height
	}
	return nil
}

// parseOpenGraph reads the <title> and the og: meta tags of a page, with
// <title> and <meta name="description"> as fallbacks for og:title and
// og:description. The first value of each key wins.
func parseOpenGraph(body []byte) map[string]any {
	og := map[string]any{}
	var title strings.Builder
	inTitle, titleDone := false, false
	description := ""
	z := html.NewTokenizer(bytes.NewReader(body))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = !titleDone && tt == html.StartTagToken
			case "meta":
				if !hasAttr {
					continue
				}
				var prop, nameAttr, content string
				hasContent := false
				for {
					k, v, more := z.TagAttr()
					switch string(k) {
					case "property":
						prop = strings.ToLower(strings.TrimSpace(string(v)))
					case "name":
						nameAttr = strings.ToLower(strings.TrimSpace(string(v)))
					case "content":
						content, hasContent = string(v), true
					}
					if !more {
						break
					}
				}
				if !hasContent {
					continue
				}
				key := prop
				if !strings.HasPrefix(key, "og:") {
					key = nameAttr // some sites use name="og:..."
				}
				if strings.HasPrefix(key, "og:") {
					if _, seen := og[key]; !seen && len(og) < previewMaxOGKeys {
						og[key] = cleanValue(content)
					}
				} else if nameAttr == "description" && description == "" {
					description = cleanValue(content)
				}
			}
		case html.TextToken:
			if inTitle && title.Len() < previewMaxValue {
				title.Write(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" && inTitle {
				inTitle, titleDone = false, true
			}
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := cleanValue(title.String()); t != "" {
			og["og:title"] = t
		}
	}
	if _, ok := og["og:description"]; !ok && description != "" {
		og["og:description"] = description
	}
	for _, k := range []string{"og:image:width", "og:image:height"} {
		if v, ok := og[k].(string); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				og[k] = n
			} else {
				delete(og, k)
			}
		}
	}
	return og
}

// cleanValue makes text valid UTF-8, collapses runs of white space and
// bounds its length.
func cleanValue(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if len(s) > previewMaxValue {
		cut := previewMaxValue
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
