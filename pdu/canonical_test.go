package pdu

import (
	"strings"
	"testing"
)

// The examples from the spec's appendix, "Canonical JSON".
func TestCanonicalJSONSpecExamples(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{`{
    "one": 1,
    "two": "Two"
}`, `{"one":1,"two":"Two"}`},
		{`{
    "b": "2",
    "a": "1"
}`, `{"a":"1","b":"2"}`},
		{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
		{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{`{
    "a": "日本語"
}`, `{"a":"日本語"}`},
		{`{
    "本": 2,
    "日": 1
}`, `{"日":1,"本":2}`},
		{`{
    "a": "\u65E5"
}`, `{"a":"日"}`},
		{`{
    "a": null
}`, `{"a":null}`},
		{`{
    "a": -0,
    "b": 1e10
}`, `{"a":0,"b":10000000000}`},
	}
	for _, tt := range tests {
		got, err := CanonicalJSON([]byte(tt.in))
		if err != nil {
			t.Errorf("CanonicalJSON(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("CanonicalJSON(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// Cases the spec's grammar decides but its examples do not show.
func TestCanonicalJSONGrammar(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"short escapes", `["\b\t\n\f\r\"\\"]`, `["\b\t\n\f\r\"\\"]`},
		{"other controls lowercase", `["\u0001\u001F\u000b"]`, `["\u0001\u001f\u000b"]`},
		{"no needless escapes", `["\/\u0041\u00e9<>&\u2028"]`, "[\"/Aé<>&\u2028\"]"},
		{"surrogate pair", `["\ud83d\ude00"]`, `["😀"]`},
		{"escaped backslash before u", `["\\ud800"]`, `["\\ud800"]`},
		{"replacement character", `["\ufffd"]`, `["�"]`},
		{"nested sort", `{"b":{"d":1,"c":2},"a":[3,{"f":4,"e":5}]}`, `{"a":[3,{"e":5,"f":4}],"b":{"c":2,"d":1}}`},
		{"integral fraction", `[2.0, 1.5e1, -3E+2, 0.0e5, -0.0]`, `[2,15,-300,0,0]`},
		{"large legacy integer kept", `[12345678901234567890]`, `[12345678901234567890]`},
		{"scalars", ` true `, `true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tt.in))
			if err != nil {
				t.Fatalf("CanonicalJSON: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestCanonicalJSONRejects(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"fraction", `{"a":1.5}`, "1.5"},
		{"tiny exponent", `{"a":1e-1000000000}`, "1e-1000000000"},
		{"exponent out of range", `{"a":1e16}`, "1e16"},
		{"duplicate key", `{"a":1,"a":2}`, `duplicate key "a"`},
		{"trailing data", `{} {}`, "after the top-level value"},
		{"truncated", `{"a":`, "invalid JSON"},
		{"invalid utf-8", "{\"a\":\"\xff\"}", "UTF-8"},
		{"lone high surrogate", `["\ud800"]`, "unpaired UTF-16 surrogate \\ud800"},
		{"lone low surrogate", `["\udc00x"]`, "unpaired"},
		{"high surrogate then other escape", `["\ud800\u0041"]`, "unpaired"},
		{"reversed pair", `["\ude00\ud83d"]`, "unpaired"},
		{"too deep", strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1), "nested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CanonicalJSON([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CanonicalJSON(%.40s) error = %v, want one mentioning %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  string // "" means valid
	}{
		{"plain", `{"a":[1,-2,"x",null,true,{"b":{}}]}`, ""},
		{"max safe", `{"a":9007199254740991,"b":-9007199254740991}`, ""},
		{"negative zero is zero", `{"a":-0}`, ""},
		{"float", `{"body":"x","n":1.5}`, "float 1.5"},
		{"integral float", `{"n":2.0}`, "float 2.0"},
		{"exponent", `{"n":1e10}`, "float 1e10"},
		{"2^53", `{"n":9007199254740992}`, "integer 9007199254740992 is outside"},
		{"-2^53", `{"n":-9007199254740992}`, "outside"},
		{"huge", `{"n":123456789012345678901234567890}`, "outside"},
		{"duplicate key", `{"a":1,"b":2,"a":3}`, `duplicate key "a"`},
		{"nested duplicate", `{"x":[{"k":1,"k":1}]}`, `$.x[0]: duplicate key "k"`},
		{"path in error", `{"content":{"info":{"w":1.5}}}`, `$.content.info.w`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateJSON([]byte(tt.in))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ValidateJSON: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("ValidateJSON error = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}
