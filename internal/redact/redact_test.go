package redact

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://as.local/transactions/1?access_token=hs-secret", "http://as.local/transactions/1?access_token=<redacted>"},
		{"http://as.local/users/%40a%3Ahs?access_token=s&user_id=x", "http://as.local/users/%40a%3Ahs?access_token=<redacted>&user_id=x"},
		{"https://u:pw@gw.example/_matrix/push/v1/notify?up=1&Client_Secret=x", "https://u:<redacted>@gw.example/_matrix/push/v1/notify?up=1&Client_Secret=<redacted>"},
		{"https://example.org/page?q=cats", "https://example.org/page?q=cats"},
		{"https://example.org/?access%5Ftoken=s", "https://example.org/?access_token=<redacted>"},
		{"http://u:pw@bad host/?token=s", "<redacted>@bad host/"},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/x?access_token=hs-secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = http.DefaultClient.Do(req)
	if err == nil || !strings.Contains(err.Error(), "hs-secret") {
		t.Fatalf("premise: %v quotes the URL", err)
	}
	red := Error(err)
	if strings.Contains(red.Error(), "hs-secret") {
		t.Errorf("redacted error %q holds the token", red)
	}
	var ue *url.Error
	if !errors.As(red, &ue) || !errors.Is(red, context.Canceled) {
		t.Errorf("redacted error %v lost its type or cause", red)
	}
	plain := errors.New("x")
	if Error(plain) != plain || Error(nil) != nil {
		t.Error("other errors changed")
	}
}
