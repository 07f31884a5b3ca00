package push

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"homeserver/mxhttp"
	"homeserver/netguard"
	"homeserver/stream"
)

// Service keeps push rules, evaluates them on new events and keeps the
// notifications they produce.
type Service struct {
	store  Store
	server string
	log    *slog.Logger
	now    func() time.Time

	// write serialises read-modify-write of a user's rules.
	write sync.Mutex

	mu    sync.Mutex
	cache map[string]*Compiled

	// roomCache is the evaluator's view of rooms' members and power
	// levels, dropped when it sees an event that changes them.
	roomCache map[string]*roomInfo
	// cursor is the evaluator's (its goroutine alone uses it): a batch
	// that notifies no one moves it in memory only.
	cursor stream.LazyCursor
	// batchIgnores holds the ignore lists read during one batch of the
	// evaluator (its goroutine alone uses it).
	batchIgnores map[string]map[string]bool

	onRulesChanged func(userID string, rules *Ruleset)

	hub    *stream.Hub
	wake   <-chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	// pushersDone is closed when the pushers have stopped.
	pushersDone chan struct{}
	started     bool
	metrics     *stream.Metrics
	leaser      stream.Leaser

	pushers *pusherSet
}

// Config of the push service.
type Config struct {
	ServerName string
	Logger     *slog.Logger
	// Guard dials push gateways, whose URLs users choose: nil for one
	// with netguard's default blocklist (Synapse's ip_range_blacklist).
	Guard *netguard.Guard
	// MinBackoff and MaxBackoff bound a failing pusher's retries.
	MinBackoff, MaxBackoff time.Duration
	// Hub wakes the evaluator on new events and the pushers on new
	// notifications, which it announces there.
	Hub *stream.Hub
	// Metrics receives the readers' gauges; Leaser decides which process
	// runs them (one process: nil).
	Metrics *stream.Metrics
	Leaser  stream.Leaser
}

// New returns the push service.
func New(store Store, c Config) *Service {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	s := &Service{
		store: store, server: c.ServerName, log: c.Logger, now: time.Now,
		cache: map[string]*Compiled{}, roomCache: map[string]*roomInfo{},
		hub: c.Hub, metrics: c.Metrics, leaser: c.Leaser,
	}
	if s.leaser == nil {
		s.leaser = stream.Local{}
	}
	if s.hub == nil {
		s.hub = stream.NewHub(c.Logger)
	}
	s.wake = s.hub.Wake(stream.Events)
	// Another process changed someone's rules (their m.push_rules account
	// data follows every change): compile them again when next needed.
	s.hub.OnChange(func(c stream.Change) {
		if c.Stream == stream.AccountData && c.Remote {
			s.mu.Lock()
			for _, u := range c.Users {
				delete(s.cache, u)
			}
			s.mu.Unlock()
		}
	})
	s.pushers = newPusherSet(s, c)
	return s
}

// OnRulesChanged registers fn, called after a user's rules change (the
// m.push_rules account data is refreshed from it).
func (s *Service) OnRulesChanged(fn func(userID string, rules *Ruleset)) { s.onRulesChanged = fn }

// userRules loads a user's own rules.
func (s *Service) userRules(ctx context.Context, userID string) (*UserRules, error) {
	m, err := s.store.PushRules(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	return UnmarshalUserRules(m[userID])
}

// Rules returns the user's full ruleset.
func (s *Service) Rules(ctx context.Context, userID string) (*Ruleset, error) {
	u, err := s.userRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	return u.Ruleset(userID), nil
}

// Rule returns one rule of the user's ruleset.
func (s *Service) Rule(ctx context.Context, userID, kind, ruleID string) (Rule, error) {
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return Rule{}, err
	}
	for _, r := range rs.Kind(kind) {
		if r.RuleID == ruleID {
			return r, nil
		}
	}
	return Rule{}, mxhttp.NotFound("Unknown push rule %s", ruleID)
}

// compiledFor returns the users' compiled rules, loading the missing ones
// from the store in one query.
func (s *Service) compiledFor(ctx context.Context, userIDs []string) (map[string]*Compiled, error) {
	out := make(map[string]*Compiled, len(userIDs))
	var missing []string
	s.mu.Lock()
	for _, u := range userIDs {
		if c, ok := s.cache[u]; ok {
			out[u] = c
		} else {
			missing = append(missing, u)
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	stored, err := s.store.PushRules(ctx, missing)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range missing {
		ur, err := UnmarshalUserRules(stored[u])
		if err != nil {
			s.log.Warn("bad stored push rules", "user_id", u, "err", err)
			ur = &UserRules{}
		}
		c := Compile(ur.Ruleset(u))
		s.cache[u] = c
		out[u] = c
	}
	return out, nil
}

// modify applies fn to the user's rules and saves them.
func (s *Service) modify(ctx context.Context, userID string, fn func(u *UserRules) error) error {
	s.write.Lock()
	defer s.write.Unlock()
	u, err := s.userRules(ctx, userID)
	if err != nil {
		return err
	}
	if err := fn(u); err != nil {
		return err
	}
	data, err := MarshalUserRules(u)
	if err != nil {
		return err
	}
	if err := s.store.SetPushRules(ctx, userID, data); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.cache, userID)
	s.mu.Unlock()
	if s.onRulesChanged != nil {
		s.onRulesChanged(userID, u.Ruleset(userID))
	}
	return nil
}

func isDefault(userID, kind, ruleID string) bool {
	if !strings.HasPrefix(ruleID, ".") {
		return false
	}
	rs := (&UserRules{}).Ruleset(userID)
	for _, r := range rs.Kind(kind) {
		if r.RuleID == ruleID {
			return true
		}
	}
	return false
}

func findRule(rs []Rule, id string) int {
	for i, r := range rs {
		if r.RuleID == id {
			return i
		}
	}
	return -1
}

// PutRuleRequest is the body of PUT /pushrules/global/{kind}/{ruleId}.
type PutRuleRequest struct {
	Actions    []any       `json:"actions"`
	Conditions []Condition `json:"conditions"`
	Pattern    *string     `json:"pattern"`
}

// ValidateActions checks an actions array: strings or set_tweak objects.
func ValidateActions(actions []any) ([]any, error) {
	if actions == nil {
		return nil, mxhttp.MissingParam("Missing actions")
	}
	out := []any{}
	for _, a := range actions {
		switch x := a.(type) {
		case string:
			switch x {
			case "notify":
				out = append(out, x)
			case "dont_notify", "coalesce":
				// Historical: ignored.
			default:
				return nil, mxhttp.InvalidParam("Unknown action %q", x)
			}
		case map[string]any:
			t, ok := x["set_tweak"].(string)
			if !ok || t == "" {
				return nil, mxhttp.InvalidParam("Invalid action: objects need a set_tweak")
			}
			out = append(out, x)
		default:
			return nil, mxhttp.InvalidParam("Invalid action")
		}
	}
	return out, nil
}

// PutRule creates or updates a user-defined rule.
func (s *Service) PutRule(ctx context.Context, userID, kind, ruleID, before, after string, req PutRuleRequest) error {
	if !ValidKind(kind) {
		return mxhttp.InvalidParam("Unknown rule kind %q", kind)
	}
	if ruleID == "" || strings.HasPrefix(ruleID, ".") || strings.ContainsAny(ruleID, `/\`) {
		return mxhttp.InvalidParam("Invalid rule ID %q: rule IDs may not start with a dot or hold slashes", ruleID)
	}
	actions, err := ValidateActions(req.Actions)
	if err != nil {
		return err
	}
	r := Rule{RuleID: ruleID, Enabled: true, Actions: actions}
	switch kind {
	case KindContent:
		if req.Pattern == nil {
			return mxhttp.MissingParam("Content rules need a pattern")
		}
		r.Pattern = req.Pattern
	case KindRoom:
		if !strings.HasPrefix(ruleID, "!") {
			return mxhttp.InvalidParam("Room rule IDs must be room IDs")
		}
	case KindSender:
		if !strings.HasPrefix(ruleID, "@") {
			return mxhttp.InvalidParam("Sender rule IDs must be user IDs")
		}
	case KindOverride, KindUnderride:
		r.Conditions = req.Conditions
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
		for _, c := range r.Conditions {
			if c.Kind == "" {
				return mxhttp.InvalidParam("Conditions need a kind")
			}
		}
	}
	return s.modify(ctx, userID, func(u *UserRules) error {
		rs := u.Kind(kind)
		if i := findRule(*rs, ruleID); i >= 0 {
			r.Enabled = (*rs)[i].Enabled
			if before == "" && after == "" {
				// An update without before/after keeps its place.
				(*rs)[i] = r
				return nil
			}
			*rs = append((*rs)[:i], (*rs)[i+1:]...)
		}
		at := 0
		switch {
		case before != "":
			if at = findRule(*rs, before); at < 0 {
				return &mxhttp.Error{Status: 400, Code: "M_UNKNOWN", Message: "before/after rule not found: " + before}
			}
		case after != "":
			if at = findRule(*rs, after); at < 0 {
				return &mxhttp.Error{Status: 400, Code: "M_UNKNOWN", Message: "before/after rule not found: " + after}
			}
			at++
		}
		*rs = append((*rs)[:at], append([]Rule{r}, (*rs)[at:]...)...)
		return nil
	})
}

// DeleteRule removes a user-defined rule; server-default rules cannot be
// deleted.
func (s *Service) DeleteRule(ctx context.Context, userID, kind, ruleID string) error {
	if !ValidKind(kind) {
		return mxhttp.InvalidParam("Unknown rule kind %q", kind)
	}
	if isDefault(userID, kind, ruleID) {
		return mxhttp.InvalidParam("Server-default rules cannot be deleted")
	}
	return s.modify(ctx, userID, func(u *UserRules) error {
		rs := u.Kind(kind)
		i := findRule(*rs, ruleID)
		if i < 0 {
			return mxhttp.NotFound("Unknown push rule %s", ruleID)
		}
		*rs = append((*rs)[:i], (*rs)[i+1:]...)
		return nil
	})
}

// SetEnabled enables or disables a rule.
func (s *Service) SetEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return s.setAttr(ctx, userID, kind, ruleID, func(r *Rule) { r.Enabled = enabled }, func(c *DefaultChange) { c.Enabled = &enabled })
}

// SetActions replaces a rule's actions.
func (s *Service) SetActions(ctx context.Context, userID, kind, ruleID string, actions []any) error {
	actions, err := ValidateActions(actions)
	if err != nil {
		return err
	}
	return s.setAttr(ctx, userID, kind, ruleID, func(r *Rule) { r.Actions = actions }, func(c *DefaultChange) { c.Actions = actions })
}

func (s *Service) setAttr(ctx context.Context, userID, kind, ruleID string, user func(*Rule), def func(*DefaultChange)) error {
	if !ValidKind(kind) {
		return mxhttp.InvalidParam("Unknown rule kind %q", kind)
	}
	return s.modify(ctx, userID, func(u *UserRules) error {
		if isDefault(userID, kind, ruleID) {
			if u.Defaults == nil {
				u.Defaults = map[string]DefaultChange{}
			}
			c := u.Defaults[ruleID]
			def(&c)
			u.Defaults[ruleID] = c
			return nil
		}
		rs := *u.Kind(kind)
		i := findRule(rs, ruleID)
		if i < 0 {
			return mxhttp.NotFound("Unknown push rule %s", ruleID)
		}
		user(&rs[i])
		return nil
	})
}

// MarshalRuleset encodes the ruleset as the API and m.push_rules show it.
func MarshalRuleset(rs *Ruleset) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"global": rs})
	return b
}
