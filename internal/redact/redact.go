// Package redact keeps secrets out of what is logged or returned about
// outbound requests. Some peers take credentials in the URL (the 2015
// application service API's ?access_token=<hs_token>, tokens in push
// gateway or previewed URLs, passwords in the user info), and Go's HTTP
// client quotes the whole URL in its errors.
package redact

import (
	"net/url"
	"strings"
)

// Placeholder replaces what is redacted.
const Placeholder = "<redacted>"

// secretWords are the parts of a query parameter's name that mark its value
// as a credential. Redacting too much only costs a log line some detail.
var secretWords = []string{"token", "secret", "pass", "auth", "key", "sig"}

func secretParam(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// URL returns raw with the values of its credential-like query parameters
// and the password of its user info replaced by Placeholder; the rest is
// kept, for the log line to stay useful. A raw that does not parse loses
// its query and anything before an "@".
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		raw, _, _ = strings.Cut(raw, "?")
		if i := strings.LastIndexByte(raw, '@'); i >= 0 {
			raw = Placeholder + raw[i:]
		}
		return raw
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Placeholder)
		}
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			name, _, hasValue := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if hasValue && secretParam(name) {
				parts[i] = name + "=" + Placeholder
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	// String would escape the placeholder's brackets in the user info and
	// query; they are written as they are so that it reads as intended.
	return strings.NewReplacer("%3Credacted%3E", Placeholder).Replace(u.String())
}

// Error returns err with the URL a *url.Error (what http.Client.Do returns)
// quotes passed through URL. Other errors are returned as they are; the
// result still unwraps to the same cause.
func Error(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return &url.Error{Op: ue.Op, URL: URL(ue.URL), Err: ue.Err}
	}
	return err
}
