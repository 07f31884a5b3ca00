package mxhttp

import (
	"errors"
	"strings"
	"testing"
)

func TestUnmarshalErrors(t *testing.T) {
	type inner struct {
		Limit int `json:"limit"`
	}
	type body struct {
		Name    string  `json:"displayname"`
		Count   int     `json:"count"`
		Ratio   float32 `json:"ratio"`
		Enabled bool    `json:"enabled"`
		List    []int   `json:"list"`
		Room    inner   `json:"room"`
	}
	long := strings.Repeat("9", 60<<10)
	for _, c := range []struct {
		name, body, code, msg string
	}{
		{"invalid UTF-8", "{\"displayname\":\"a\xffb\"}", "M_NOT_JSON", "Request body is not valid UTF-8"},
		{"string for number", `{"count":"x"}`, "M_BAD_JSON", `Field "count" must be a number, not a string`},
		{"object for string", `{"displayname":{}}`, "M_BAD_JSON", `Field "displayname" must be a string, not an object`},
		{"number for boolean", `{"enabled":1}`, "M_BAD_JSON", `Field "enabled" must be a boolean, not a number`},
		{"string for array", `{"list":"x"}`, "M_BAD_JSON", `Field "list" must be an array, not a string`},
		{"nested", `{"room":{"limit":true}}`, "M_BAD_JSON", `Field "room.limit" must be a number, not a boolean`},
		{"fraction for integer", `{"count":1.5}`, "M_BAD_JSON", `Field "count" must be an integer within range`},
		{"huge integer", `{"count":` + long + `}`, "M_BAD_JSON", `Field "count" must be an integer within range`},
		{"huge float", `{"ratio":1e999}`, "M_BAD_JSON", `Field "ratio" is out of range`},
		{"array element", `{"list":[1,"` + long + `"]}`, "M_BAD_JSON", `Field "list" must be a number, not a string`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v body
			err := Unmarshal([]byte(c.body), &v)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("not a Matrix error: %v", err)
			}
			if e.Code != c.code || e.Message != c.msg {
				t.Fatalf("got %s %q, want %s %q", e.Code, e.Message, c.code, c.msg)
			}
			if len(e.Message) > 200 || strings.Contains(e.Message, "Go ") || strings.Contains(e.Message, "mxhttp.") {
				t.Fatalf("message leaks input or Go types: %q", e.Message)
			}
		})
	}
}

// A field path built from a map's keys is cut short in the message.
func TestUnmarshalErrorBoundsFieldPath(t *testing.T) {
	type deep struct {
		M map[string]struct {
			N int `json:"n"`
		} `json:"m"`
	}
	var v deep
	err := Unmarshal([]byte(`{"m":{"`+strings.Repeat("k", 5000)+`":{"n":"x"}}}`), &v)
	var e *Error
	if !errors.As(err, &e) || e.Code != "M_BAD_JSON" {
		t.Fatalf("got %v", err)
	}
	if len(e.Message) > 200 {
		t.Fatalf("message of %d bytes", len(e.Message))
	}
}

func TestNULEscapes(t *testing.T) {
	for body, nul := range map[string]bool{
		`{"x":"a\u0000b"}`:     true,
		`{"x":"\\u0000"}`:      false, // a backslash, then the text u0000
		`{"x":"\\\u0000"}`:     true,
		`{"x":"u0000"}`:        false,
		`{"\u0000":1}`:         true,
		`{"x":"\\\\u0000"}`:    false,
		`{"x":["\\\\\u0000"]}`: true,
	} {
		if got := hasEscapedNUL([]byte(body)); got != nul {
			t.Errorf("%s: NUL %v, want %v", body, got, nul)
		}
	}
}
