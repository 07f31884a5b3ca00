package transport

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// XMatrix is the content of an "Authorization: X-Matrix ..." header.
type XMatrix struct {
	Origin string
	// Destination is empty when the sender did not include it (servers
	// before spec v1.3).
	Destination string
	Key         string // key ID, "ed25519:..."
	Sig         string // unpadded base64
}

// String formats x as an Authorization header value the way the spec asks
// senders to for compatibility: one space after the scheme, lower-case
// names, no whitespace around commas, quoted values.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString("X-Matrix ")
	param := func(name, value string) {
		if b.Len() > len("X-Matrix ") {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteString(`="`)
		for i := 0; i < len(value); i++ {
			if value[i] == '"' || value[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(value[i])
		}
		b.WriteByte('"')
	}
	param("origin", x.Origin)
	if x.Destination != "" {
		param("destination", x.Destination)
	}
	param("key", x.Key)
	param("sig", x.Sig)
	return b.String()
}

// ParseXMatrix parses an Authorization header value of the X-Matrix scheme
// (RFC 9110 section 11.4, as the spec describes it): the scheme, one or
// more spaces, then comma-separated name=value parameters with optional
// whitespace around commas; names are case-insensitive, values are tokens
// or quoted strings with backslash escapes, and colons (and the other
// characters of server names and base64) are allowed unquoted for older
// servers. Unknown parameters are ignored; "signature" is accepted for
// "sig", the name the spec's prose uses. origin, key and sig are required.
func ParseXMatrix(header string) (XMatrix, error) {
	i := strings.IndexAny(header, " \t")
	if i < 0 || !strings.EqualFold(header[:i], "X-Matrix") {
		return XMatrix{}, errors.New("not an X-Matrix authorization")
	}
	params := map[string]string{}
	rest := header[i:]
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return XMatrix{}, fmt.Errorf("parameter without value: %q", rest)
		}
		name := strings.ToLower(strings.TrimRight(rest[:eq], " \t"))
		if !isToken(name) {
			return XMatrix{}, fmt.Errorf("invalid parameter name %q", name)
		}
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var value string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			closed := false
			j := 1
			for ; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					b.WriteByte(rest[j])
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return XMatrix{}, fmt.Errorf("unterminated quoted value of %s", name)
			}
			value, rest = b.String(), rest[j+1:]
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			value, rest = rest[:end], rest[end:]
			if strings.ContainsAny(value, `"\`) {
				return XMatrix{}, fmt.Errorf("invalid unquoted value of %s", name)
			}
		}
		rest = strings.TrimLeft(rest, " \t")
		if rest != "" && rest[0] != ',' {
			return XMatrix{}, fmt.Errorf("expected a comma after %s", name)
		}
		if _, dup := params[name]; dup {
			return XMatrix{}, fmt.Errorf("repeated parameter %s", name)
		}
		params[name] = value
	}
	x := XMatrix{Origin: params["origin"], Destination: params["destination"], Key: params["key"], Sig: params["sig"]}
	if _, ok := params["sig"]; !ok {
		x.Sig = params["signature"]
	}
	switch {
	case x.Origin == "":
		return XMatrix{}, errors.New("no origin")
	case x.Key == "":
		return XMatrix{}, errors.New("no key")
	case x.Sig == "":
		return XMatrix{}, errors.New("no sig")
	case !ValidServerName(x.Origin):
		return XMatrix{}, fmt.Errorf("invalid origin %q", x.Origin)
	}
	return x, nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// signedRequest is the JSON object an X-Matrix signature covers.
type signedRequest struct {
	Method      string          `json:"method"`
	URI         string          `json:"uri"`
	Origin      string          `json:"origin"`
	Destination string          `json:"destination"`
	Content     json.RawMessage `json:"content,omitempty"`
	Signatures  json.RawMessage `json:"signatures,omitempty"`
}

// SignRequest returns the Authorization header value of a request from
// key.ServerName to destination: requestURI is the path and query as sent,
// content the JSON body (nil for none).
func SignRequest(key pdu.Key, method, requestURI, destination string, content []byte) (string, error) {
	data, err := json.Marshal(signedRequest{
		Method: method, URI: requestURI, Origin: key.ServerName, Destination: destination, Content: content,
	})
	if err != nil {
		return "", err
	}
	signed, err := pdu.SignJSON(key, data)
	if err != nil {
		return "", err
	}
	var s struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &s); err != nil {
		return "", err
	}
	sig := s.Signatures[key.ServerName][key.KeyID]
	if sig == "" {
		return "", errors.New("transport: signature missing from signed request")
	}
	return XMatrix{Origin: key.ServerName, Destination: destination, Key: key.KeyID, Sig: sig}.String(), nil
}

// KeyLookup returns serverName's public key keyID, valid now.
type KeyLookup func(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error)

// VerifyRequest checks the X-Matrix signature of a request to ourName whose
// body has been read into body, and returns the server that sent it. Of
// several X-Matrix Authorization headers, one valid is enough. The signed
// object is rebuilt from the request itself: its method, its target as
// received (r.RequestURI), and the body parsed as JSON. Failures are
// *mxhttp.Error: 401 M_UNAUTHORIZED, or 400 M_NOT_JSON for a body that is
// not JSON.
func VerifyRequest(ctx context.Context, r *http.Request, body []byte, ourName string, keys KeyLookup) (string, error) {
	var headers []string
	for _, h := range r.Header.Values("Authorization") {
		if i := strings.IndexAny(h, " \t"); i > 0 && strings.EqualFold(h[:i], "X-Matrix") {
			headers = append(headers, h)
		}
	}
	if len(headers) == 0 {
		return "", mxhttp.Unauthorized("Missing X-Matrix Authorization header")
	}
	var content json.RawMessage
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return "", mxhttp.NotJSON("Request body is not JSON")
		}
		content = body
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	var first error
	for _, h := range headers {
		origin, err := verifyHeader(ctx, h, r.Method, uri, content, ourName, keys)
		if err == nil {
			return origin, nil
		}
		if first == nil {
			first = err
		}
	}
	return "", first
}

func verifyHeader(ctx context.Context, header, method, uri string, content json.RawMessage, ourName string, keys KeyLookup) (string, error) {
	x, err := ParseXMatrix(header)
	if err != nil {
		return "", mxhttp.Unauthorized("Malformed X-Matrix Authorization header: %v", err)
	}
	if x.Destination != "" && x.Destination != ourName {
		return "", mxhttp.Unauthorized("Request is for destination %q, not this server", x.Destination)
	}
	sigs, err := json.Marshal(map[string]map[string]string{x.Origin: {x.Key: x.Sig}})
	if err != nil {
		return "", err
	}
	// The destination is ours even when the header omits it: it always
	// was part of what is signed.
	data, err := json.Marshal(signedRequest{
		Method: method, URI: uri, Origin: x.Origin, Destination: ourName, Content: content, Signatures: sigs,
	})
	if err != nil {
		return "", mxhttp.Unauthorized("Request cannot be verified: %v", err)
	}
	pub, err := keys(ctx, x.Origin, x.Key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return "", mxhttp.Unauthorized("Unknown key %s of %s", x.Key, x.Origin)
	}
	if err := pdu.VerifyJSON(data, x.Origin, x.Key, pub); err != nil {
		return "", mxhttp.Unauthorized("Invalid signature by %s with key %s", x.Origin, x.Key)
	}
	return x.Origin, nil
}

type ctxKey int

const (
	originKey ctxKey = iota
	bodyKey
)

// Origin returns the server that sent the request authenticated by
// Middleware, "" outside such a request.
func Origin(ctx context.Context) string {
	s, _ := ctx.Value(originKey).(string)
	return s
}

// Body returns the body of the request authenticated by Middleware.
func Body(ctx context.Context) []byte {
	b, _ := ctx.Value(bodyKey).([]byte)
	return b
}

// DefaultMaxBody is Middleware's body limit when given none: a full
// transaction (50 PDUs and 100 EDUs of at most 64 KiB) fits.
const DefaultMaxBody = 16 << 20

// Middleware authenticates federation requests to ourName: it reads the
// body (at most maxBody bytes, else 413 M_TOO_LARGE), verifies the X-Matrix
// signature with VerifyRequest, and passes the request on with its origin
// and body in the context (Origin, Body); r.Body reads the body again.
func Middleware(ourName string, keys KeyLookup, maxBody int64) func(http.Handler) http.Handler {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tooLarge := mxhttp.TooLarge("Request body larger than %d bytes", maxBody)
			if r.ContentLength > maxBody {
				mxhttp.WriteError(w, tooLarge)
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			if err != nil {
				mxhttp.WriteError(w, mxhttp.Unknown("Reading the request body failed"))
				return
			}
			if int64(len(body)) > maxBody {
				mxhttp.WriteError(w, tooLarge)
				return
			}
			origin, err := VerifyRequest(r.Context(), r, body, ourName, keys)
			if err != nil {
				mxhttp.WriteError(w, err)
				return
			}
			ctx := context.WithValue(r.Context(), originKey, origin)
			ctx = context.WithValue(ctx, bodyKey, body)
			r = r.WithContext(ctx)
			r.Body = io.NopCloser(bytes.NewReader(body))
			next.ServeHTTP(w, r)
		})
	}
}
