package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Client speaks the public Client-Server API of a homeserver. It holds no
// user: every call takes the access token it acts with. A homeserver of
// several processes has several base URLs: calls without a token go to the
// first (a shared-secret nonce or a UIA session lives in the process that
// issued it), and each access token sticks to one process chosen by its
// hash, as a load balancer hashing on the client would do.
type Client struct {
	Bases        []string
	HTTP         *http.Client
	SharedSecret string // shared-secret admin registration when set, else the dummy flow
	txn          atomic.Int64
}

// NewClient returns a client for the homeserver at bases, a comma-separated
// list of base URLs (one per process).
func NewClient(bases, sharedSecret string) *Client {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}
	c := &Client{HTTP: &http.Client{Transport: tr, Timeout: 120 * time.Second}, SharedSecret: sharedSecret}
	for _, b := range strings.Split(bases, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			c.Bases = append(c.Bases, b)
		}
	}
	return c
}

// base returns the base URL a request made with token goes to.
func (c *Client) base(token string) string {
	if token == "" || len(c.Bases) == 1 {
		return c.Bases[0]
	}
	h := fnv.New32a()
	h.Write([]byte(token))
	return c.Bases[h.Sum32()%uint32(len(c.Bases))]
}

// User is a logged-in account.
type User struct {
	ID, Token, Localpart, Password string
}

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Code    string
	Message string
	Method  string
	Path    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d %s %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

// Do sends a JSON request (body may be nil or []byte sent as is with
// contentType) and decodes a JSON answer into out (if not nil). It returns
// the number of bytes of the answer.
func (c *Client) Do(ctx context.Context, method, path, token string, body any, out any) (int, error) {
	return c.DoRaw(ctx, method, path, token, "application/json", body, out)
}

// DoRaw is Do with an explicit request content type.
func (c *Client) DoRaw(ctx context.Context, method, path, token, contentType string, body any, out any) (int, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base(token)+path, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return len(data), err
	}
	if resp.StatusCode/100 != 2 {
		e := &APIError{Status: resp.StatusCode, Method: method, Path: strings.SplitN(path, "?", 2)[0]}
		var m struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if json.Unmarshal(data, &m) == nil {
			e.Code, e.Message = m.Code, m.Message
		}
		if e.Code == "" && len(data) < 200 {
			e.Message = string(data)
		}
		return len(data), e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return len(data), fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return len(data), nil
}

// Register creates localpart with the shared secret when the client has
// one, else through the dummy user-interactive flow.
func (c *Client) Register(ctx context.Context, localpart, password string) (User, error) {
	var out struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if c.SharedSecret != "" {
		var nonce struct {
			Nonce string `json:"nonce"`
		}
		if _, err := c.Do(ctx, "GET", "/_synapse/admin/v1/register", "", nil, &nonce); err != nil {
			return User{}, err
		}
		body := map[string]any{"nonce": nonce.Nonce, "username": localpart, "password": password, "admin": false,
			"mac": sharedSecretMAC(c.SharedSecret, nonce.Nonce, localpart, password, false)}
		if _, err := c.Do(ctx, "POST", "/_synapse/admin/v1/register", "", body, &out); err != nil {
			return User{}, err
		}
	} else {
		body := map[string]any{"username": localpart, "password": password, "initial_device_display_name": "hsbench"}
		var flows struct {
			Session string `json:"session"`
		}
		if err := c.uiaSession(ctx, body, &flows.Session); err != nil {
			return User{}, err
		}
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": flows.Session}
		if _, err := c.Do(ctx, "POST", "/_matrix/client/v3/register", "", body, &out); err != nil {
			return User{}, err
		}
	}
	if out.AccessToken == "" {
		return User{}, fmt.Errorf("register %s: no access token in the answer", localpart)
	}
	return User{ID: out.UserID, Token: out.AccessToken, Localpart: localpart, Password: password}, nil
}

// uiaSession posts body to /register and returns the session of the 401.
func (c *Client) uiaSession(ctx context.Context, body map[string]any, session *string) error {
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", c.base("")+"/_matrix/client/v3/register", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var m struct {
		Session string `json:"session"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.Session == "" {
		return fmt.Errorf("register: no user-interactive session (HTTP %d); is registration open (m.login.dummy)?", resp.StatusCode)
	}
	*session = m.Session
	return nil
}

// sharedSecretMAC is the HMAC-SHA1 of Synapse's shared-secret registration.
func sharedSecretMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + role))
	return hex.EncodeToString(m.Sum(nil))
}

// CreateRoom creates a public room and returns its ID.
func (c *Client) CreateRoom(ctx context.Context, u User, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	_, err := c.Do(ctx, "POST", "/_matrix/client/v3/createRoom", u.Token, map[string]any{"preset": "public_chat", "name": name}, &out)
	return out.RoomID, err
}

// Join joins roomID.
func (c *Client) Join(ctx context.Context, u User, roomID string) error {
	_, err := c.Do(ctx, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), u.Token, map[string]any{}, nil)
	return err
}

// Send sends an m.room.message and returns its event ID.
func (c *Client) Send(ctx context.Context, u User, roomID string, content map[string]any) (string, error) {
	txn := fmt.Sprintf("hsb%d-%d", time.Now().UnixNano(), c.txn.Add(1))
	var out struct {
		EventID string `json:"event_id"`
	}
	_, err := c.Do(ctx, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, u.Token, content, &out)
	return out.EventID, err
}

// SyncResponse is the part of a /sync answer hsbench reads.
type SyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					EventID string         `json:"event_id"`
					Type    string         `json:"type"`
					Sender  string         `json:"sender"`
					Content map[string]any `json:"content"`
				} `json:"events"`
			} `json:"timeline"`
			UnreadNotifications struct {
				NotificationCount int `json:"notification_count"`
			} `json:"unread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

// Sync calls /sync; it returns the answer and its size in bytes.
func (c *Client) Sync(ctx context.Context, u User, since string, timeout time.Duration, filter string) (*SyncResponse, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", fmt.Sprint(timeout.Milliseconds()))
	if filter != "" {
		q.Set("filter", filter)
	}
	var out SyncResponse
	n, err := c.Do(ctx, "GET", "/_matrix/client/v3/sync?"+q.Encode(), u.Token, nil, &out)
	return &out, n, err
}
