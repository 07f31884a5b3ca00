package media

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/faultpeer"
)

// A site that fails in any way gives an error answer, never a hang past
// the preview's timeout; the failure is not cached, and a later good
// answer is previewed.
func TestPreviewSiteFaults(t *testing.T) {
	var (
		mu    sync.Mutex
		fault faultpeer.Fault
		peer  *faultpeer.Peer
	)
	peer = faultpeer.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := fault
		mu.Unlock()
		if !peer.Inject(w, r, f) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, page)
		}
	}), nil)
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), Timeout: 300 * time.Millisecond})
	for i, f := range faultpeer.Faults {
		mu.Lock()
		fault = f
		mu.Unlock()
		target := fmt.Sprintf("%s/page%d?token=secret", peer.URL, i)
		code, body := get(t, h, target)
		if f == faultpeer.Garbage200 {
			// Not HTML: nothing to say, but an answer.
			if code != http.StatusOK {
				t.Errorf("%s: %d %v", f, code, body)
			}
			continue
		}
		if code != http.StatusBadGateway && code != http.StatusGatewayTimeout {
			t.Errorf("%s: %d %v", f, code, body)
		}
		if msg, _ := body["error"].(string); strings.Contains(msg, "secret") || strings.Contains(msg, "127.0.0.1") {
			t.Errorf("%s: the error quotes the URL: %q", f, msg)
		}
		mu.Lock()
		fault = faultpeer.OK
		mu.Unlock()
		if code, body := get(t, h, target); code != http.StatusOK || body["og:title"] != "OG title" {
			t.Errorf("%s, then fine: %d %v", f, code, body)
		}
	}
}

// While one site hangs, every request for its preview waits on one fetch,
// and previews of other sites are answered.
func TestPreviewHangingSite(t *testing.T) {
	var hang *faultpeer.Peer
	hang = faultpeer.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hang.Inject(w, r, faultpeer.HangConn)
	}), nil)
	good := faultpeer.New(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	}), nil)
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), Timeout: time.Minute})
	const waiters = 5
	codes := make(chan int, waiters)
	for range waiters {
		go func() {
			code, _ := get(t, h, hang.URL+"/slow")
			codes <- code
		}()
	}
	deadline := time.Now().Add(time.Minute)
	for hang.Hung() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code, body := get(t, h, good.URL+"/"); code != http.StatusOK || body["og:title"] != "OG title" {
		t.Errorf("while another site hangs: %d %v", code, body)
	}
	hang.Release()
	for range waiters {
		if code := <-codes; code != http.StatusBadGateway {
			t.Errorf("hanging site: %d", code)
		}
	}
	if n := hang.Accepted(); n != 1 {
		t.Errorf("%d fetches for %d concurrent requests of one URL", n, waiters)
	}
}

// An image that fails in any way leaves the page's preview without an
// image, not without a preview.
func TestPreviewImageFaults(t *testing.T) {
	var (
		mu    sync.Mutex
		fault faultpeer.Fault
		peer  *faultpeer.Peer
	)
	peer = faultpeer.New(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/img") {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, `<html><head><meta property="og:title" content="T"><meta property="og:image" content="/img%s"></head></html>`, r.URL.Path)
			return
		}
		mu.Lock()
		f := fault
		mu.Unlock()
		peer.Inject(w, r, f)
	}), nil)
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), Timeout: 300 * time.Millisecond})
	for i, f := range faultpeer.Faults {
		mu.Lock()
		fault = f
		mu.Unlock()
		code, body := get(t, h, fmt.Sprintf("%s/page%d", peer.URL, i))
		if code != http.StatusOK || body["og:title"] != "T" || body["og:image"] != nil {
			t.Errorf("%s: %d %v", f, code, body)
		}
	}
}
