package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// ASRegistration is the part of an application service registration
// hsbench writes and reads.
type ASRegistration struct {
	ID              string `yaml:"id"`
	URL             string `yaml:"url"`
	ASToken         string `yaml:"as_token"`
	HSToken         string `yaml:"hs_token"`
	SenderLocalpart string `yaml:"sender_localpart"`
	RateLimited     bool   `yaml:"rate_limited"`
	Namespaces      struct {
		Users []struct {
			Exclusive bool   `yaml:"exclusive"`
			Regex     string `yaml:"regex"`
		} `yaml:"users"`
	} `yaml:"namespaces"`
}

// asUserPrefix starts the localparts of the users whose events the
// service is interested in.
const asUserPrefix = "hsbas-"

// newASRegistration makes a registration with fresh tokens for a receiver
// on port.
func newASRegistration(port int) *ASRegistration {
	tok := func() string {
		var b [16]byte
		_, _ = rand.Read(b[:])
		return hex.EncodeToString(b[:])
	}
	r := &ASRegistration{ID: "hsbench", URL: fmt.Sprintf("http://127.0.0.1:%d", port), ASToken: tok(), HSToken: tok(), SenderLocalpart: "hsbench-as"}
	r.Namespaces.Users = append(r.Namespaces.Users, struct {
		Exclusive bool   `yaml:"exclusive"`
		Regex     string `yaml:"regex"`
	}{false, "@" + asUserPrefix + ".*"})
	return r
}

// loadOrCreateRegistration reads path, or writes a new registration there;
// created reports the latter.
func loadOrCreateRegistration(path string, port int) (reg *ASRegistration, yamlText string, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		reg = &ASRegistration{}
		if err := yaml.Unmarshal(data, reg); err != nil {
			return nil, "", false, fmt.Errorf("%s: %w", path, err)
		}
		if reg.HSToken == "" || reg.URL == "" {
			return nil, "", false, fmt.Errorf("%s: no hs_token or url", path)
		}
		return reg, string(data), false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", false, err
	}
	reg = newASRegistration(port)
	out, err := yaml.Marshal(reg)
	if err != nil {
		return nil, "", false, err
	}
	return reg, string(out), true, os.WriteFile(path, out, 0o600)
}

// Arrival is one event received by the service.
type Arrival struct {
	Stream string
	Seq    int
	At     time.Time
}

// Receiver is a loopback application service that records the hsbench
// events it is sent, in order of arrival.
type Receiver struct {
	hsToken string
	srv     *http.Server
	mu      sync.Mutex
	txns    map[string]bool
	got     []Arrival
	notify  chan struct{}
	Dups    int // transactions received again (allowed: retries)
}

// StartReceiver listens on addr ("127.0.0.1:PORT").
func StartReceiver(addr, hsToken string) (*Receiver, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{hsToken: hsToken, txns: map[string]bool{}, notify: make(chan struct{}, 1)}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

// Close stops the receiver.
func (r *Receiver) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	tok := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = req.URL.Query().Get("access_token")
	}
	w.Header().Set("Content-Type", "application/json")
	if tok != r.hsToken {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN"}`))
		return
	}
	path := req.URL.Path
	if req.Method != http.MethodPut || !strings.Contains(path, "/transactions/") {
		if strings.HasSuffix(path, "/ping") {
			_, _ = w.Write([]byte(`{}`))
			return
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND"}`))
		return
	}
	txn := path[strings.LastIndex(path, "/")+1:]
	var body struct {
		Events []struct {
			Content map[string]any `json:"content"`
		} `json:"events"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	r.mu.Lock()
	if r.txns[txn] {
		r.Dups++
	} else {
		r.txns[txn] = true
		for _, e := range body.Events {
			stream, _ := e.Content["hsbench_stream"].(string)
			seq, ok := e.Content["hsbench_seq"].(float64)
			if stream != "" && ok {
				r.got = append(r.got, Arrival{stream, int(seq), now})
			}
		}
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	_, _ = w.Write([]byte(`{}`))
}

// Arrivals returns what was received so far.
func (r *Receiver) Arrivals() []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Arrival(nil), r.got...)
}

// WaitFor waits until n events arrived or timeout passed.
func (r *Receiver) WaitFor(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		got := len(r.got)
		r.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-r.notify:
		case <-deadline:
			return fmt.Errorf("the service received %d of %d events within %s", got, n, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CheckReport is the outcome of checking the order and completeness of
// what a service received.
type CheckReport struct {
	Received   int
	Duplicates int // an event received more than once
	Missing    int // sent but never received
	Unexpected int // received but not sent (unknown stream or seq out of range)
	Reordered  int // received after an event sent later in the same stream
}

// OK reports a complete, ordered, duplicate-free delivery.
func (c CheckReport) OK() bool {
	return c.Duplicates == 0 && c.Missing == 0 && c.Unexpected == 0 && c.Reordered == 0
}

func (c CheckReport) String() string {
	return fmt.Sprintf("received %d: %d duplicates, %d missing, %d unexpected, %d reordered", c.Received, c.Duplicates, c.Missing, c.Unexpected, c.Reordered)
}

// CheckOrder checks arrivals against what was sent: sent[stream] events
// numbered 0..n-1, each stream sent in order.
func CheckOrder(sent map[string]int, got []Arrival) CheckReport {
	rep := CheckReport{Received: len(got)}
	seen := map[string]map[int]bool{}
	last := map[string]int{}
	for _, a := range got {
		n, ok := sent[a.Stream]
		if !ok || a.Seq < 0 || a.Seq >= n {
			rep.Unexpected++
			continue
		}
		if seen[a.Stream] == nil {
			seen[a.Stream] = map[int]bool{}
			last[a.Stream] = -1
		}
		if seen[a.Stream][a.Seq] {
			rep.Duplicates++
			continue
		}
		seen[a.Stream][a.Seq] = true
		if a.Seq < last[a.Stream] {
			rep.Reordered++
		} else {
			last[a.Stream] = a.Seq
		}
	}
	streams := make([]string, 0, len(sent))
	for s := range sent {
		streams = append(streams, s)
	}
	sort.Strings(streams)
	for _, s := range streams {
		rep.Missing += sent[s] - len(seen[s])
	}
	return rep
}
