package adminapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/rooms"
)

// roomStore holds the queries of this file's endpoints.
type roomStore interface {
	// ListRooms returns a page of rooms and the number of rooms matching.
	ListRooms(ctx context.Context, q RoomListQuery) ([]RoomDetails, int, error)
	// RoomDetails returns one room (rooms.ErrNotFound when unknown).
	RoomDetails(ctx context.Context, serverName, roomID string) (RoomDetails, error)
	ForwardExtremities(ctx context.Context, roomID string) ([]Extremity, error)

	CreateDeleteTask(ctx context.Context, t DeleteTask) error
	UpdateDeleteTask(ctx context.Context, t DeleteTask) error
	// DeleteTask returns one task (rooms.ErrNotFound when unknown).
	DeleteTask(ctx context.Context, deleteID string) (DeleteTask, error)
	// DeleteTasksOfRoom returns a room's tasks, oldest first.
	DeleteTasksOfRoom(ctx context.Context, roomID string) ([]DeleteTask, error)

	CreatePurgeTask(ctx context.Context, t PurgeTask) error
	UpdatePurgeTask(ctx context.Context, t PurgeTask) error
	// PurgeTask returns one task (rooms.ErrNotFound when unknown).
	PurgeTask(ctx context.Context, purgeID string) (PurgeTask, error)
}

// PurgeTask is a purge of a room's history (POST purge_history), persisted.
type PurgeTask struct {
	PurgeID   string
	RoomID    string
	Status    string
	Error     string
	CreatedTS int64
	UpdatedTS int64
}

// RoomListQuery is GET /v1/rooms' query.
type RoomListQuery struct {
	ServerName  string
	From, Limit int
	// OrderBy is one of roomOrders.
	OrderBy    string
	Backward   bool
	SearchTerm string
	// PublicRooms and EmptyRooms, when set, keep only rooms that are (or
	// are not) in the directory, and that have (no) joined members.
	PublicRooms, EmptyRooms *bool
}

// roomOrders are the order_by values of the room list (Synapse's, with
// its deprecated alphabetical and size).
var roomOrders = []string{
	"name", "alphabetical", "size", "canonical_alias", "joined_members", "joined_local_members", "version", "creator",
	"encryption", "federatable", "public", "join_rules", "guest_access", "history_visibility", "state_events",
}

// RoomStats is a room of the room list, with Synapse's fields.
type RoomStats struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int64   `json:"joined_members"`
	JoinedLocalMembers int64   `json:"joined_local_members"`
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	GuestAccess        *string `json:"guest_access"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int64   `json:"state_events"`
	RoomType           *string `json:"room_type"`
}

// RoomDetails is GET /v1/rooms/{roomID}: the list's fields and more.
type RoomDetails struct {
	RoomStats
	Topic              *string `json:"topic"`
	Avatar             *string `json:"avatar"`
	JoinedLocalDevices int64   `json:"joined_local_devices"`
	Forgotten          bool    `json:"forgotten"`
}

// Extremity is a forward extremity of a room. ReceivedTS is the event's
// origin_server_ts: this server does not record when it received events.
type Extremity struct {
	EventID    string `json:"event_id"`
	StateGroup int64  `json:"state_group"`
	Depth      int64  `json:"depth"`
	ReceivedTS int64  `json:"received_ts"`
}

// Statuses of a delete task (Synapse's task scheduler's).
const (
	taskScheduled = "scheduled"
	taskActive    = "active"
	taskComplete  = "complete"
	taskFailed    = "failed"
)

// A running task records that it is alive every taskHeartbeat; one whose
// record is older than taskStale was running in a process that died, and
// is reported (and recorded) as failed.
const (
	taskHeartbeat = time.Minute
	taskStale     = 5 * time.Minute
	taskLost      = "Interrupted: the server running the task stopped"
)

// unfinished reports whether a task of this status has not ended.
func unfinished(status string) bool { return status == taskScheduled || status == taskActive }

// abandoned reports whether an unfinished task's process is gone.
func abandoned(status string, updatedTS int64) bool {
	return unfinished(status) && time.Since(time.UnixMilli(updatedTS)) > taskStale
}

// heartbeat calls beat every taskHeartbeat until the returned stop.
func heartbeat(ctx context.Context, beat func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(taskHeartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// DeleteTask is a room deletion of DELETE /v2/rooms/{roomID}, persisted.
type DeleteTask struct {
	DeleteID  string
	RoomID    string
	Status    string
	Error     string
	Result    rooms.ShutdownResult
	CreatedTS int64
	UpdatedTS int64
}

// MarshalJSON renders the task as Synapse's delete status does.
func (t DeleteTask) MarshalJSON() ([]byte, error) {
	v := struct {
		DeleteID     string               `json:"delete_id"`
		RoomID       string               `json:"room_id"`
		Status       string               `json:"status"`
		Error        string               `json:"error,omitempty"`
		ShutdownRoom rooms.ShutdownResult `json:"shutdown_room"`
	}{t.DeleteID, t.RoomID, t.Status, t.Error, t.Result}
	return json.Marshal(v)
}

// roomTasks runs room deletions and history purges in the background,
// bound to the API's lifetime rather than the request's.
type roomTasks struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// runMu orders starts against stop: none starts once stop began.
	runMu sync.Mutex
	// deleteMu makes "no deletion of this room is running" and the
	// start of one a single step within this process.
	deleteMu sync.Mutex
}

func (t *roomTasks) init() {
	t.once.Do(func() { t.ctx, t.cancel = context.WithCancel(context.Background()) })
}

// start runs fn in the background, unless the API is stopping.
func (t *roomTasks) start(fn func(ctx context.Context)) error {
	t.init()
	t.runMu.Lock()
	defer t.runMu.Unlock()
	if t.ctx.Err() != nil {
		return mxhttp.Unavailable(time.Second)
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn(t.ctx)
	}()
	return nil
}

// stop cancels the running tasks and waits for them to record how far
// they got.
func (t *roomTasks) stop() {
	t.init()
	t.runMu.Lock()
	t.cancel()
	t.runMu.Unlock()
	t.wg.Wait()
}

func (a *API) roomRoutes(r chi.Router) {
	r.Get("/v1/rooms", a.listRooms)
	r.Get("/v1/rooms/{roomID}", a.roomDetails)
	r.Get("/v1/rooms/{roomID}/members", a.roomMembers)
	r.Get("/v1/rooms/{roomID}/state", a.roomState)
	r.Get("/v1/rooms/{roomID}/messages", a.roomMessages)
	r.Get("/v1/rooms/{roomID}/context/{eventID}", a.roomEventContext)
	r.Get("/v1/rooms/{roomID}/block", a.roomBlockStatus)
	r.Put("/v1/rooms/{roomID}/block", a.blockRoom)
	r.Get("/v1/rooms/{roomID}/forward_extremities", a.forwardExtremities)
	r.Post("/v1/rooms/{roomID}/make_room_admin", a.makeRoomAdmin)
	r.Post("/v1/join/{roomID}", a.forceJoin)
	r.Delete("/v2/rooms/{roomID}", a.deleteRoom)
	r.Get("/v2/rooms/{roomID}/delete_status", a.deleteStatusOfRoom)
	r.Get("/v2/rooms/delete_status/{deleteID}", a.deleteStatus)
	r.Post("/v1/purge_history/{roomID}", a.purgeHistory)
	r.Post("/v1/purge_history/{roomID}/{eventID}", a.purgeHistory)
	r.Get("/v1/purge_history_status/{purgeID}", a.purgeHistoryStatus)
}

// maxRoomBody bounds the admin rooms endpoints' request bodies.
const maxRoomBody = 64 << 10

// roomIDParam reads the roomID path parameter, which must be a room ID:
// else Synapse's 400.
func roomIDParam(r *http.Request) (string, error) {
	id := pathParam(r, "roomID")
	if !rooms.ValidRoomID(id) {
		return "", mxhttp.Unknown("%s is not a legal room ID", id)
	}
	return id, nil
}

// optionalBool reads a boolean query parameter, "true" or "false" as in
// Synapse; nil when absent.
func optionalBool(r *http.Request, name string) (*bool, error) {
	switch r.URL.Query().Get(name) {
	case "":
		return nil, nil
	case "true":
		v := true
		return &v, nil
	case "false":
		v := false
		return &v, nil
	}
	return nil, mxhttp.InvalidParam("Boolean query parameter %q must be one of ['true', 'false']", name)
}

func (a *API) listRooms(w http.ResponseWriter, r *http.Request) {
	page, err := readOffsetPage(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := RoomListQuery{ServerName: a.d.Rooms.ServerName(), From: page.from, Limit: page.limit}
	if q.OrderBy, err = readOrderBy(r, "name", roomOrders); err != nil {
		a.fail(w, r, err)
		return
	}
	if q.Backward, err = readDirection(r, "f"); err != nil {
		a.fail(w, r, err)
		return
	}
	if vs, ok := r.URL.Query()["search_term"]; ok {
		if vs[0] == "" {
			a.fail(w, r, mxhttp.InvalidParam("search_term cannot be an empty string"))
			return
		}
		q.SearchTerm = vs[0]
	}
	if q.PublicRooms, err = optionalBool(r, "public_rooms"); err != nil {
		a.fail(w, r, err)
		return
	}
	if q.EmptyRooms, err = optionalBool(r, "empty_rooms"); err != nil {
		a.fail(w, r, err)
		return
	}
	list, total, err := a.d.Store.ListRooms(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	stats := make([]RoomStats, len(list))
	for i, d := range list {
		stats[i] = d.RoomStats
	}
	resp := map[string]any{"rooms": stats, "offset": q.From, "total_rooms": total}
	if q.From+q.Limit < total {
		resp["next_batch"] = q.From + q.Limit
	}
	if q.From > 0 {
		resp["prev_batch"] = max(q.From-q.Limit, 0)
	}
	ok(w, resp)
}

func (a *API) roomDetails(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.d.Store.RoomDetails(r.Context(), a.d.Rooms.ServerName(), roomID)
	if errors.Is(err, rooms.ErrNotFound) {
		err = mxhttp.NotFound("Room not found")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, d)
}

func (a *API) roomMembers(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	members, err := a.d.Rooms.AdminJoinedMembers(r.Context(), roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if members == nil {
		members = []string{}
	}
	ok(w, map[string]any{"members": members, "total": len(members)})
}

func (a *API) roomState(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, err := a.d.Rooms.AdminState(r.Context(), roomID, r.URL.Query().Get("type"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if st == nil {
		st = []json.RawMessage{}
	}
	ok(w, map[string]any{"state": st})
}

// eventLimit reads limit (default def), a non-negative integer.
func eventLimit(r *http.Request, def int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Query parameter limit must be a string representing a positive integer.")
	}
	return n, nil
}

// eventFilter reads the filter query parameter, a RoomEventFilter.
func eventFilter(r *http.Request) (*filter.RoomEventFilter, error) {
	raw := r.URL.Query().Get("filter")
	if raw != "" && !json.Valid([]byte(raw)) {
		return nil, mxhttp.NotJSON("Query parameter 'filter' must be a valid JSON object")
	}
	f, err := filter.Parse(raw)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid filter: %v", err)
	}
	return f, nil
}

func (a *API) roomMessages(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	backward, err := readDirection(r, "f")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := eventLimit(r, 10)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	f, err := eventFilter(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if f.Limit != nil && r.URL.Query().Get("limit") == "" {
		limit = *f.Limit
	}
	q := r.URL.Query()
	res, err := a.d.Rooms.AdminMessages(r.Context(), roomID, rooms.MessagesQuery{
		From: q.Get("from"), To: q.Get("to"), Backward: backward, Limit: limit, Filter: f,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}

func (a *API) roomEventContext(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := eventLimit(r, 10)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	f, err := eventFilter(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.d.Rooms.AdminEventContext(r.Context(), roomID, pathParam(r, "eventID"), rooms.ContextQuery{Limit: limit, Filter: f})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, res)
}

func (a *API) roomBlockStatus(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	by, blocked, err := a.d.Rooms.BlockedBy(r.Context(), roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !blocked {
		ok(w, map[string]any{"block": false})
		return
	}
	ok(w, map[string]any{"block": true, "user_id": by})
}

func (a *API) blockRoom(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Block *bool `json:"block"`
	}
	if err := mxhttp.DecodeJSON(r, maxRoomBody, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Block == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['block']"))
		return
	}
	if err := a.d.Rooms.SetBlocked(r.Context(), roomID, a.requester(r).UserID, *body.Block); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"block": *body.Block})
}

func (a *API) forwardExtremities(w http.ResponseWriter, r *http.Request) {
	roomID, err := a.d.Rooms.ResolveRoomForAdmin(r.Context(), pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if known, err := a.d.Rooms.RoomExists(r.Context(), roomID); err != nil || !known {
		if err == nil {
			err = mxhttp.NotFound("Room not found")
		}
		a.fail(w, r, err)
		return
	}
	xs, err := a.d.Store.ForwardExtremities(r.Context(), roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"count": len(xs), "results": xs})
}

// localUserParam checks the user_id of a body naming a local user.
func (a *API) localUserParam(ctx context.Context, userID string) error {
	if !rooms.ValidUserID(userID) {
		return mxhttp.InvalidParam("Invalid user id")
	}
	if !strings.HasSuffix(userID, ":"+a.d.Rooms.ServerName()) {
		return mxhttp.Unknown("This endpoint can only be used with local users")
	}
	if _, err := a.d.Accounts.GetAccount(ctx, userID); errors.Is(err, accounts.ErrNotFound) {
		return mxhttp.NotFound("User not found")
	} else if err != nil {
		return err
	}
	return nil
}

func (a *API) forceJoin(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserID *string `json:"user_id"`
	}
	if err := mxhttp.DecodeJSON(r, maxRoomBody, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.UserID == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['user_id']"))
		return
	}
	if err := a.localUserParam(r.Context(), *body.UserID); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := a.d.Rooms.ResolveRoomForAdmin(r.Context(), pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.d.Rooms.ForceJoin(r.Context(), a.requester(r).UserID, *body.UserID, roomID); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"room_id": roomID})
}

func (a *API) makeRoomAdmin(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserID *string `json:"user_id"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, maxRoomBody, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := a.d.Rooms.ResolveRoomForAdmin(r.Context(), pathParam(r, "roomID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	user := a.requester(r).UserID
	if body.UserID != nil {
		user = *body.UserID
	}
	if err := a.d.Rooms.MakeRoomAdmin(r.Context(), roomID, user); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{})
}

func (a *API) deleteRoom(w http.ResponseWriter, r *http.Request) {
	var body struct {
		NewRoomUserID *string `json:"new_room_user_id"`
		RoomName      *string `json:"room_name"`
		Message       *string `json:"message"`
		Block         bool    `json:"block"`
		Purge         *bool   `json:"purge"`
		ForcePurge    bool    `json:"force_purge"`
	}
	if err := mxhttp.DecodeJSON(r, maxRoomBody, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	req := rooms.ShutdownRequest{RoomID: roomID, Requester: a.requester(r).UserID, Block: body.Block}
	if body.NewRoomUserID != nil {
		req.NewRoomUserID = *body.NewRoomUserID
		if !rooms.ValidUserID(req.NewRoomUserID) {
			a.fail(w, r, mxhttp.InvalidParam("Invalid user id"))
			return
		}
		if !strings.HasSuffix(req.NewRoomUserID, ":"+a.d.Rooms.ServerName()) {
			a.fail(w, r, mxhttp.Unknown("User must be our own: %s", req.NewRoomUserID))
			return
		}
	}
	if body.RoomName != nil {
		req.NewRoomName = *body.RoomName
	}
	if body.Message != nil {
		req.Message = *body.Message
	}
	purge := body.Purge == nil || *body.Purge
	known, err := a.d.Rooms.RoomExists(r.Context(), roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !known && !body.Block {
		// Only blocking makes sense of a room this server has never seen.
		a.fail(w, r, mxhttp.NotFound("Unknown room id %s", roomID))
		return
	}
	task, err := a.startDelete(r.Context(), req, purge, body.ForcePurge)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"delete_id": task.DeleteID})
}

// startDelete records a delete task and runs it in the background.
func (a *API) startDelete(ctx context.Context, req rooms.ShutdownRequest, purge, force bool) (DeleteTask, error) {
	a.tasks.deleteMu.Lock()
	defer a.tasks.deleteMu.Unlock()
	existing, err := a.d.Store.DeleteTasksOfRoom(ctx, req.RoomID)
	if err != nil {
		return DeleteTask{}, err
	}
	for _, t := range existing {
		if unfinished(t.Status) && !abandoned(t.Status, t.UpdatedTS) {
			return DeleteTask{}, mxhttp.Unknown("Purge already in progress for %s", req.RoomID)
		}
	}
	now := time.Now().UnixMilli()
	t := DeleteTask{
		DeleteID: rand.Text(), RoomID: req.RoomID, Status: taskScheduled, CreatedTS: now, UpdatedTS: now,
		Result: rooms.ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}},
	}
	if err := a.d.Store.CreateDeleteTask(ctx, t); err != nil {
		return DeleteTask{}, err
	}
	err = a.tasks.start(func(ctx context.Context) { a.runDelete(ctx, t, req, purge, force) })
	if err != nil {
		t.Status, t.Error = taskFailed, "The server is shutting down"
		if uerr := a.d.Store.UpdateDeleteTask(ctx, t); uerr != nil {
			a.log.Error("recording room deletion", "delete_id", t.DeleteID, "err", uerr)
		}
		return DeleteTask{}, err
	}
	return t, nil
}

// runDelete shuts the room down, then purges it, recording each step.
func (a *API) runDelete(ctx context.Context, t DeleteTask, req rooms.ShutdownRequest, purge, force bool) {
	var mu sync.Mutex // t, between the run and its heartbeat
	// The record outlives a cancelled run: it must say how far it got.
	record := func() {
		mu.Lock()
		defer mu.Unlock()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := a.d.Store.UpdateDeleteTask(rctx, t); err != nil {
			a.log.Error("recording room deletion", "delete_id", t.DeleteID, "room_id", t.RoomID, "err", err)
		}
	}
	set := func(f func()) {
		mu.Lock()
		f()
		mu.Unlock()
		record()
	}
	set(func() { t.Status = taskActive })
	stop := heartbeat(ctx, record)
	res, err := a.d.Rooms.ShutdownRoom(ctx, req, func(r rooms.ShutdownResult) { set(func() { t.Result = r }) })
	if err == nil && purge {
		err = a.d.Rooms.PurgeRoom(ctx, req.RoomID, force)
	}
	stop()
	set(func() {
		t.Result = res
		t.Status = taskComplete
		if err != nil {
			t.Status, t.Error = taskFailed, errorText(err)
		}
	})
	if err != nil {
		a.log.Warn("room deletion failed", "delete_id", t.DeleteID, "room_id", t.RoomID, "err", err)
	}
}

// errorText is the error of a failed task as its status tells it.
func errorText(err error) string {
	var mx *mxhttp.Error
	if errors.As(err, &mx) {
		return mx.Message
	}
	return err.Error()
}

// settleAbandoned records as failed a task whose process died.
func (a *API) settleAbandoned(ctx context.Context, t *DeleteTask) {
	if !abandoned(t.Status, t.UpdatedTS) {
		return
	}
	t.Status, t.Error = taskFailed, taskLost
	if err := a.d.Store.UpdateDeleteTask(ctx, *t); err != nil {
		a.log.Error("recording room deletion", "delete_id", t.DeleteID, "err", err)
	}
}

func (a *API) deleteStatusOfRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	tasks, err := a.d.Store.DeleteTasksOfRoom(r.Context(), roomID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if len(tasks) == 0 {
		a.fail(w, r, mxhttp.NotFound("No delete task for room_id '%s' found", roomID))
		return
	}
	for i := range tasks {
		a.settleAbandoned(r.Context(), &tasks[i])
	}
	ok(w, map[string]any{"results": tasks})
}

func (a *API) deleteStatus(w http.ResponseWriter, r *http.Request) {
	id := pathParam(r, "deleteID")
	t, err := a.d.Store.DeleteTask(r.Context(), id)
	if errors.Is(err, rooms.ErrNotFound) {
		err = mxhttp.NotFound("delete id '%s' not found", id)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.settleAbandoned(r.Context(), &t)
	ok(w, t)
}

func (a *API) purgeHistory(w http.ResponseWriter, r *http.Request) {
	var body struct {
		DeleteLocalEvents bool    `json:"delete_local_events"`
		PurgeUpToEventID  *string `json:"purge_up_to_event_id"`
		PurgeUpToTS       *int64  `json:"purge_up_to_ts"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, maxRoomBody, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	eventID := pathParam(r, "eventID")
	if eventID == "" && body.PurgeUpToEventID != nil {
		eventID = *body.PurgeUpToEventID
	}
	if eventID == "" && body.PurgeUpToTS == nil {
		a.fail(w, r, mxhttp.BadJSON("must specify purge_up_to_event_id or purge_up_to_ts"))
		return
	}
	var ts int64
	if body.PurgeUpToTS != nil {
		ts = *body.PurgeUpToTS
	}
	depth, err := a.d.Rooms.HistoryPurgePoint(r.Context(), roomID, eventID, ts)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	t := PurgeTask{PurgeID: rand.Text(), RoomID: roomID, Status: taskActive, CreatedTS: time.Now().UnixMilli()}
	if err := a.d.Store.CreatePurgeTask(r.Context(), t); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.tasks.start(func(ctx context.Context) { a.runPurgeHistory(ctx, t, depth, body.DeleteLocalEvents) }); err != nil {
		t.Status, t.Error = taskFailed, "The server is shutting down"
		if uerr := a.d.Store.UpdatePurgeTask(r.Context(), t); uerr != nil {
			a.log.Error("recording history purge", "purge_id", t.PurgeID, "err", uerr)
		}
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"purge_id": t.PurgeID})
}

// runPurgeHistory purges the history and records how it ended.
func (a *API) runPurgeHistory(ctx context.Context, t PurgeTask, depth int64, deleteLocal bool) {
	stop := heartbeat(ctx, func() {
		if err := a.d.Store.UpdatePurgeTask(ctx, t); err != nil {
			a.log.Error("recording history purge", "purge_id", t.PurgeID, "err", err)
		}
	})
	n, err := a.d.Rooms.PurgeHistory(ctx, t.RoomID, depth, deleteLocal)
	stop()
	if err != nil {
		t.Status, t.Error = taskFailed, errorText(err)
		a.log.Warn("purging room history failed", "purge_id", t.PurgeID, "room_id", t.RoomID, "err", err)
	} else {
		t.Status = taskComplete
		a.log.Info("purged room history", "purge_id", t.PurgeID, "room_id", t.RoomID, "events", n)
	}
	// The record outlives a cancelled run.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.d.Store.UpdatePurgeTask(rctx, t); err != nil {
		a.log.Error("recording history purge", "purge_id", t.PurgeID, "err", err)
	}
}

func (a *API) purgeHistoryStatus(w http.ResponseWriter, r *http.Request) {
	id := pathParam(r, "purgeID")
	t, err := a.d.Store.PurgeTask(r.Context(), id)
	if errors.Is(err, rooms.ErrNotFound) {
		err = mxhttp.NotFound("purge id '%s' not found", id)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if abandoned(t.Status, t.UpdatedTS) {
		t.Status, t.Error = taskFailed, taskLost
		if err := a.d.Store.UpdatePurgeTask(r.Context(), t); err != nil {
			a.log.Error("recording history purge", "purge_id", t.PurgeID, "err", err)
		}
	}
	resp := map[string]string{"status": t.Status}
	if t.Error != "" {
		resp["error"] = t.Error
	}
	ok(w, resp)
}
