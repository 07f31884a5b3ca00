package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzBody has the field types handlers decode into.
type fuzzBody struct {
	Name    string            `json:"name"`
	Count   int               `json:"count"`
	Limit   *int64            `json:"limit"`
	Flag    bool              `json:"flag"`
	IDs     []string          `json:"ids"`
	Content json.RawMessage   `json:"content"`
	Extra   map[string]any    `json:"extra"`
	Nested  *fuzzBody         `json:"nested"`
	Tags    map[string]string `json:"tags"`
}

// FuzzDecodeJSON feeds arbitrary bodies to the request decoders: every
// failure must be a Matrix error of the documented kind, a body over the
// limit must be refused as too large, and an accepted body must be a JSON
// object without NUL characters, whose re-encoding is accepted again.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, ` {"name":"x","count":1} `, `[]`, `"str"`, ``, `   `, `{`, `null`,
		`{"name":1}`, `{"ids":["a",2]}`, `{"nested":{"nested":{"limit":9007199254740993}}}`,
		`{"content":{"body":"\u0000"}}`, `{"name":"\\u0000"}`, `{"extra":{"a\u0000":1}}`,
		`{"count":1e400}`, "{\"name\":\"\xff\"}", `{"tags":{"a":"b"},"flag":true} trailing`,
	} {
		f.Add([]byte(s), uint16(64))
	}
	f.Add([]byte(`{"name":"a long enough body to exceed a tiny limit"}`), uint16(4))
	f.Fuzz(func(t *testing.T, body []byte, limit uint16) {
		var into fuzzBody
		err := DecodeJSON(httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)), int64(limit), &into)
		checkDecodeError(t, body, err)
		if len(body) > int(limit) {
			var me *Error
			if !errors.As(err, &me) || me.Code != "M_TOO_LARGE" {
				t.Fatalf("%d-byte body with limit %d: %v, want M_TOO_LARGE", len(body), limit, err)
			}
			return
		}
		optErr := DecodeOptionalJSON(httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)), int64(limit), new(fuzzBody))
		checkDecodeError(t, body, optErr)
		if len(bytes.TrimSpace(body)) == 0 && optErr != nil {
			t.Fatalf("optional empty body %q refused: %v", body, optErr)
		}

		var m map[string]any
		if err := Unmarshal(body, &m); err != nil {
			checkDecodeError(t, body, err)
			return
		}
		trimmed := bytes.TrimSpace(body)
		if !json.Valid(trimmed) || trimmed[0] != '{' {
			t.Fatalf("accepted %q, which is not a JSON object", body)
		}
		if hasNUL(m) {
			t.Fatalf("accepted %q, which holds a NUL character", body)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := Unmarshal(again, new(map[string]any)); err != nil {
			t.Fatalf("accepted %q but not its re-encoding %q: %v", body, again, err)
		}
	})
}

// checkDecodeError requires err to be nil or a 400/413 Matrix error with
// one of the decoders' codes.
func checkDecodeError(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var me *Error
	if !errors.As(err, &me) {
		t.Fatalf("body %q: error %v (%T) is not a Matrix error", body, err, err)
	}
	switch {
	case me.Code == "M_TOO_LARGE" && me.Status == http.StatusRequestEntityTooLarge:
	case (me.Code == "M_NOT_JSON" || me.Code == "M_BAD_JSON") && me.Status == http.StatusBadRequest:
	default:
		t.Fatalf("body %q: unexpected error %v", body, me)
	}
}

// hasNUL reports whether a decoded JSON value has a NUL in a key or string.
func hasNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.ContainsRune(x, 0)
	case []any:
		for _, e := range x {
			if hasNUL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	}
	return false
}
