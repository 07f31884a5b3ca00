package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"homeserver/accounts"
	"homeserver/config"
)

// registerUser is Synapse's register_new_matrix_user: it registers a user
// through the shared-secret admin API of a running server. Cancelling ctx
// (Ctrl-C, in main) abandons a prompt or the request.
func registerUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("register-user", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configPath, user, password, secret, userType string
	var admin, noAdmin, existsOK bool
	fs.StringVar(&configPath, "config-path", "", "homeserver.yaml to read registration_shared_secret and the listener from")
	fs.StringVar(&configPath, "c", "", "shorthand for --config-path")
	fs.StringVar(&user, "user", "", "localpart of the new user")
	fs.StringVar(&user, "u", "", "shorthand for --user")
	fs.StringVar(&password, "password", "", "password of the new user (prompted for if absent)")
	fs.StringVar(&password, "p", "", "shorthand for --password")
	fs.StringVar(&secret, "shared-secret", "", "registration shared secret (instead of reading the config)")
	fs.StringVar(&secret, "k", "", "shorthand for --shared-secret")
	fs.StringVar(&userType, "user_type", "", "user type: bot or support")
	fs.StringVar(&userType, "t", "", "shorthand for --user_type")
	fs.BoolVar(&admin, "admin", false, "make the user a server admin")
	fs.BoolVar(&admin, "a", false, "shorthand for --admin")
	fs.BoolVar(&noAdmin, "no-admin", false, "do not make the user an admin (no prompt)")
	fs.BoolVar(&existsOK, "exists-ok", false, "do not fail if the user already exists")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: homeserver register-user -c homeserver.yaml [-u USER] [-p PASSWORD] [-a|--no-admin] [SERVER_URL]")
		fs.PrintDefaults()
	}
	// Flags may follow the positional URL, as Python's argparse allows.
	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(positional) > 1 {
		fmt.Fprintln(stderr, "register-user: too many arguments")
		return 2
	}
	serverURL := ""
	if len(positional) == 1 {
		serverURL = positional[0]
	}
	if configPath != "" {
		cfg, _, err := config.Load(configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if secret == "" {
			secret = cfg.RegistrationSharedSecret
		}
		if serverURL == "" {
			serverURL = clientURL(cfg)
		}
	}
	if secret == "" {
		fmt.Fprintln(stderr, "register-user: no registration_shared_secret in the config and no --shared-secret given")
		return 1
	}
	if serverURL == "" {
		serverURL = "http://localhost:8008"
	}

	p := &prompter{ctx: ctx, stdin: stdin, in: bufio.NewReader(stdin), out: stdout}
	// interrupted reports a prompt abandoned because ctx was cancelled. No
	// prompt may follow it: the abandoned read still owns stdin.
	interrupted := func(err error) bool {
		if err != nil && ctx.Err() != nil {
			fmt.Fprintln(stderr, "\nregister-user: interrupted")
			return true
		}
		return false
	}
	var err error
	if user == "" {
		user, err = p.line("New user localpart: ")
		if interrupted(err) {
			return 1
		}
		if err != nil || user == "" {
			fmt.Fprintln(stderr, "register-user: a localpart is required")
			return 1
		}
	}
	if password == "" {
		password, err = p.password("Password: ")
		if interrupted(err) {
			return 1
		}
		if err != nil || password == "" {
			fmt.Fprintln(stderr, "register-user: a password is required")
			return 1
		}
		confirm, err := p.password("Confirm password: ")
		if interrupted(err) {
			return 1
		}
		if err != nil || confirm != password {
			fmt.Fprintln(stderr, "register-user: passwords do not match")
			return 1
		}
	}
	if !admin && !noAdmin {
		// No answer at all (end of input) means the default, no.
		answer, err := p.line("Make admin [no]: ")
		if interrupted(err) {
			return 1
		}
		admin = slices.Contains([]string{"y", "yes", "true"}, strings.ToLower(answer))
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	userID, err := sharedSecretRegister(ctx, serverURL, secret, user, password, userType, admin)
	if err != nil {
		var apiErr *matrixError
		if existsOK && errors.As(err, &apiErr) && apiErr.Code == "M_USER_IN_USE" {
			fmt.Fprintln(stdout, "User already exists; continuing.")
			return 0
		}
		fmt.Fprintln(stderr, "register-user:", err)
		return 1
	}
	fmt.Fprintf(stdout, "Success! Registered %s\n", userID)
	return 0
}

// clientURL is the address of the first listener serving the client API,
// or "" if there is none. A listener bound to all addresses is reached on
// loopback.
func clientURL(cfg *config.Config) string {
	for _, l := range cfg.Listeners {
		if l.Type != "http" {
			continue
		}
		for _, r := range l.Resources {
			if !slices.Contains(r.Names, "client") {
				continue
			}
			host := "127.0.0.1"
			if len(l.BindAddresses) > 0 {
				host = l.BindAddresses[0]
			}
			if addr, err := netip.ParseAddr(host); host == "" || err == nil && addr.IsUnspecified() {
				if addr.Is6() {
					host = "::1"
				} else {
					host = "127.0.0.1"
				}
			}
			scheme := "http"
			if l.TLS {
				scheme = "https"
			}
			return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(l.Port))
		}
	}
	return ""
}

// prompter asks questions on out and reads the answers from stdin.
//
// main diverts SIGINT into ctx, so Ctrl-C no longer kills the process while
// it waits for input; instead every read runs in the background, and a
// prompt returns as soon as ctx is cancelled. The abandoned read keeps
// stdin, so nothing may be read after that: the caller is expected to exit.
type prompter struct {
	ctx   context.Context
	stdin io.Reader
	in    *bufio.Reader // buffers stdin for line reads
	out   io.Writer
}

// line asks question and returns the answer, trimmed of spaces. Only a read
// error before any input (such as end of input) is an error.
func (p *prompter) line(question string) (string, error) {
	fmt.Fprint(p.out, question)
	return p.await(func() (string, error) {
		line, err := p.in.ReadString('\n')
		if err != nil && line == "" {
			return "", err
		}
		return strings.TrimSpace(line), nil
	}, nil)
}

// password is line without echo when stdin is a terminal.
func (p *prompter) password(question string) (string, error) {
	f, ok := p.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return p.line(question)
	}
	fd := int(f.Fd())
	// term.ReadPassword turns echo back on only when it returns, which an
	// abandoned read never does; restore the terminal here instead.
	state, err := term.GetState(fd)
	if err != nil {
		return "", err
	}
	fmt.Fprint(p.out, question)
	answer, err := p.await(func() (string, error) {
		b, err := term.ReadPassword(fd)
		return string(b), err
	}, func() { _ = term.Restore(fd, state) })
	fmt.Fprintln(p.out)
	return answer, err
}

// await runs read in the background and returns its result, or the cause of
// ctx's cancellation as soon as that happens, after calling abandon (if not
// nil) to undo what the read, now left running, has set up.
func (p *prompter) await(read func() (string, error), abandon func()) (string, error) {
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := read()
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-p.ctx.Done():
		if abandon != nil {
			abandon()
		}
		return "", context.Cause(p.ctx)
	}
}

func sharedSecretRegister(ctx context.Context, baseURL, secret, user, password, userType string, admin bool) (string, error) {
	endpoint := strings.TrimRight(baseURL, "/") + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := doJSON(ctx, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return "", err
	}
	body := map[string]any{
		"nonce": nonce.Nonce, "username": user, "password": password, "admin": admin,
		"mac": accounts.SharedSecretMAC(secret, nonce.Nonce, user, password, admin, userType),
	}
	if userType != "" {
		body["user_type"] = userType
	}
	var resp struct {
		UserID string `json:"user_id"`
	}
	if err := doJSON(ctx, http.MethodPost, endpoint, body, &resp); err != nil {
		return "", err
	}
	return resp.UserID, nil
}

// matrixError is an error answer of the homeserver that has a Matrix
// errcode.
type matrixError struct {
	Code    string
	Message string
	Status  int
}

func (e *matrixError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Message, e.Status)
}

func doJSON(ctx context.Context, method, url string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("contacting the homeserver: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code    string `json:"errcode"`
			Message string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Code != "" {
			return &matrixError{Code: e.Code, Message: e.Message, Status: resp.StatusCode}
		}
		return fmt.Errorf("HTTP %d from %s", resp.StatusCode, url)
	}
	return json.Unmarshal(data, out)
}
