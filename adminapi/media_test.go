package adminapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const mrdBase = "/_synapse/admin"

// mrdMakeAdmin makes u a server admin.
func mrdMakeAdmin(t *testing.T, s *testserver.Server, u testserver.User) {
	t.Helper()
	if err := s.Srv.Accounts().SetAdmin(context.Background(), u.ID, true); err != nil {
		t.Fatal(err)
	}
}

// mrdWantErr fails unless r is a Matrix error with this status and errcode.
func mrdWantErr(t *testing.T, r *testserver.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Errcode() != code {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.Errcode(), status, code, r.Body)
	}
}

// mediaUpload uploads body as u and returns the media ID.
func mediaUpload(t *testing.T, s *testserver.Server, u testserver.User, contentType string, body []byte, filename string) string {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload?filename="+url.QueryEscape(filename), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+u.Token)
	req.Header.Set("Content-Type", contentType)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: status %d", resp.StatusCode)
	}
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	_, id, ok := strings.Cut(strings.TrimPrefix(out.ContentURI, "mxc://"), "/")
	if !ok {
		t.Fatalf("content_uri %q", out.ContentURI)
	}
	return id
}

// mediaStatus is the status of a download of server/id by u through the
// authenticated client endpoint (path "download" or "thumbnail").
func mediaStatus(t *testing.T, s *testserver.Server, u testserver.User, prefix, kind, server, id string) int {
	t.Helper()
	path := prefix + "/" + kind + "/" + server + "/" + id
	if kind == "thumbnail" {
		path += "?width=16&height=16&method=scale"
	}
	return s.Do("GET", path, u.Token, nil).Status
}

const (
	mediaClientPath = "/_matrix/client/v1/media"
	mediaLegacyPath = "/_matrix/media/v3"
)

// mediaPNG is a 64×64 image.
func mediaPNG(t *testing.T, shade uint8) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.SetNRGBA(x, y, color.NRGBA{shade, uint8(x * 4), uint8(y * 4), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mediaFiles lists the content files of s's media store.
func mediaFiles(t *testing.T, s *testserver.Server) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(s.Dir, "media_store", "content"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files[d.Name()] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func mediaSHA(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func mediaInfo(t *testing.T, s *testserver.Server, admin testserver.User, server, id string) map[string]any {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", mrdBase+"/v1/media/"+server+"/"+id, admin.Token, nil)
	info, _ := r.JSON["media_info"].(map[string]any)
	if info == nil {
		t.Fatalf("no media_info: %s", r.Body)
	}
	return info
}

func TestAdminMediaInfo(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	data := []byte("hello media")
	id := mediaUpload(t, s, bob, "text/plain", data, "hello.txt")

	info := mediaInfo(t, s, admin, "test.local", id)
	want := map[string]any{
		"media_origin": "test.local", "user_id": bob.ID, "media_id": id, "media_type": "text/plain",
		"media_length": float64(len(data)), "upload_name": "hello.txt", "quarantined_by": nil,
		"safe_from_quarantine": false, "sha256": mediaSHA(data), "last_access_ts": nil,
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("%s = %v, want %v", k, info[k], v)
		}
	}
	if ts, _ := info["created_ts"].(float64); ts <= 0 {
		t.Errorf("created_ts = %v", info["created_ts"])
	}
	// A download is recorded as an access.
	if st := mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", id); st != http.StatusOK {
		t.Fatalf("download: %d", st)
	}
	if ts, _ := mediaInfo(t, s, admin, "test.local", id)["last_access_ts"].(float64); ts <= 0 {
		t.Errorf("last_access_ts after a download = %v", ts)
	}

	mrdWantErr(t, s.Do("GET", mrdBase+"/v1/media/test.local/"+id, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	mrdWantErr(t, s.Do("GET", mrdBase+"/v1/media/test.local/nosuchmedia", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	// Remote media that is not cached is not found either.
	mrdWantErr(t, s.Do("GET", mrdBase+"/v1/media/other.example/"+id, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
}

func TestAdminMediaQuarantine(t *testing.T) {
	// The legacy endpoints serve media only when it is not authenticated.
	s := testserver.Start(t, "enable_authenticated_media: false\n")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	id := mediaUpload(t, s, bob, "image/png", mediaPNG(t, 10), "a.png")
	other := mediaUpload(t, s, bob, "image/png", mediaPNG(t, 20), "b.png")

	served := func(id string) []int {
		var out []int
		for _, prefix := range []string{mediaClientPath, mediaLegacyPath} {
			for _, kind := range []string{"download", "thumbnail"} {
				out = append(out, mediaStatus(t, s, bob, prefix, kind, "test.local", id))
			}
		}
		return out
	}
	for _, st := range served(id) {
		if st != http.StatusOK {
			t.Fatalf("before quarantine: %v", served(id))
		}
	}

	s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/quarantine/test.local/"+id, admin.Token, map[string]any{})
	for _, st := range served(id) {
		if st != http.StatusNotFound {
			t.Fatalf("quarantined media served: %v", served(id))
		}
	}
	r := s.Do("GET", mediaClientPath+"/download/test.local/"+id, bob.Token, nil)
	mrdWantErr(t, r, http.StatusNotFound, "M_NOT_FOUND")
	if got := mediaInfo(t, s, admin, "test.local", id)["quarantined_by"]; got != admin.ID {
		t.Errorf("quarantined_by = %v, want %s", got, admin.ID)
	}
	// Other media is untouched.
	if st := mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", other); st != http.StatusOK {
		t.Errorf("other media: %d", st)
	}

	s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/unquarantine/test.local/"+id, admin.Token, map[string]any{})
	for _, st := range served(id) {
		if st != http.StatusOK {
			t.Fatalf("after unquarantine: %v", served(id))
		}
	}
	if got := mediaInfo(t, s, admin, "test.local", id)["quarantined_by"]; got != nil {
		t.Errorf("quarantined_by after unquarantine = %v", got)
	}

	for _, p := range []string{"/v1/media/quarantine/test.local/", "/v1/media/unquarantine/test.local/"} {
		mrdWantErr(t, s.Do("POST", mrdBase+p+id, bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		mrdWantErr(t, s.Do("POST", mrdBase+p+"nosuchmedia", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	}
}

// mediaSendImage sends an m.image event pointing at url (and thumbnail, when
// set) to the room.
func mediaSendImage(s *testserver.Server, u testserver.User, roomID, mxc, thumb string) {
	content := map[string]any{"msgtype": "m.image", "body": "img", "url": mxc}
	if thumb != "" {
		content["info"] = map[string]any{"thumbnail_url": thumb}
	}
	s.Send(u, roomID, "m.room.message", content)
}

func TestAdminMediaProtectAndBulkQuarantine(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	inRoom := mediaUpload(t, s, bob, "text/plain", []byte("one"), "1.txt")
	protected := mediaUpload(t, s, bob, "text/plain", []byte("two"), "2.txt")
	elsewhere := mediaUpload(t, s, bob, "text/plain", []byte("three"), "3.txt")
	room := s.CreateRoom(bob, nil)
	mediaSendImage(s, bob, room, "mxc://test.local/"+inRoom, "mxc://test.local/"+protected)
	// Media of other servers, unknown here, counts for nothing.
	mediaSendImage(s, bob, room, "mxc://other.example/abcdef", "")

	s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/protect/"+protected, admin.Token, map[string]any{})
	if v := mediaInfo(t, s, admin, "test.local", protected)["safe_from_quarantine"]; v != true {
		t.Fatalf("safe_from_quarantine = %v", v)
	}

	r := s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/room/"+url.PathEscape(room)+"/media/quarantine", admin.Token, map[string]any{})
	if n := r.JSON["num_quarantined"]; n != float64(1) {
		t.Fatalf("room quarantine: num_quarantined %v, want 1", n)
	}
	status := func(id string) int { return mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", id) }
	if a, b, c := status(inRoom), status(protected), status(elsewhere); a != 404 || b != 200 || c != 200 {
		t.Fatalf("after room quarantine: in room %d, protected %d, elsewhere %d", a, b, c)
	}

	// The user's media: everything but the protected one (the one already
	// quarantined counts again, as in Synapse).
	r = s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/user/"+url.PathEscape(bob.ID)+"/media/quarantine", admin.Token, map[string]any{})
	if n := r.JSON["num_quarantined"]; n != float64(2) {
		t.Fatalf("user quarantine: num_quarantined %v, want 2", n)
	}
	if a, b, c := status(inRoom), status(protected), status(elsewhere); a != 404 || b != 200 || c != 404 {
		t.Fatalf("after user quarantine: %d %d %d", a, b, c)
	}

	s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/unprotect/"+protected, admin.Token, map[string]any{})
	if v := mediaInfo(t, s, admin, "test.local", protected)["safe_from_quarantine"]; v != false {
		t.Fatalf("safe_from_quarantine after unprotect = %v", v)
	}
	r = s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/quarantine_media/"+url.PathEscape(room), admin.Token, map[string]any{})
	if n := r.JSON["num_quarantined"]; n != float64(2) {
		t.Fatalf("legacy room quarantine: num_quarantined %v, want 2", n)
	}
	if st := status(protected); st != 404 {
		t.Fatalf("unprotected media after quarantine: %d", st)
	}

	for _, p := range []string{
		"/v1/media/protect/" + protected, "/v1/media/unprotect/" + protected,
		"/v1/room/" + url.PathEscape(room) + "/media/quarantine",
		"/v1/user/" + url.PathEscape(bob.ID) + "/media/quarantine",
	} {
		mrdWantErr(t, s.Do("POST", mrdBase+p, bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	}
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/media/protect/nosuchmedia", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/media/unprotect/nosuchmedia", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/room/"+url.PathEscape("!nosuchroom:test.local")+"/media/quarantine", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/user/"+url.PathEscape("@nobody:test.local")+"/media/quarantine", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/user/"+url.PathEscape("@bob:other.example")+"/media/quarantine", admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminMediaDelete(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	shared := []byte("the same bytes twice")
	id1 := mediaUpload(t, s, bob, "text/plain", shared, "1.txt")
	id2 := mediaUpload(t, s, bob, "text/plain", shared, "2.txt")
	img := mediaPNG(t, 30)
	pic := mediaUpload(t, s, bob, "image/png", img, "p.png")
	if st := mediaStatus(t, s, bob, mediaClientPath, "thumbnail", "test.local", pic); st != http.StatusOK {
		t.Fatalf("thumbnail: %d", st)
	}

	mrdWantErr(t, s.Do("DELETE", mrdBase+"/v1/media/test.local/"+id1, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	r := s.MustDo(http.StatusOK, "DELETE", mrdBase+"/v1/media/test.local/"+id1, admin.Token, nil)
	if got := fmt.Sprint(r.JSON["deleted_media"], r.JSON["total"]); got != fmt.Sprintf("[%s] 1", id1) {
		t.Fatalf("delete answered %s", r.Body)
	}
	if st := mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", id1); st != http.StatusNotFound {
		t.Fatalf("deleted media: %d", st)
	}
	// The bytes stay while another media ID holds them.
	if !mediaFiles(t, s)[mediaSHA(shared)] {
		t.Fatal("shared content removed while still used")
	}
	if st := mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", id2); st != http.StatusOK {
		t.Fatalf("media sharing the content: %d", st)
	}
	s.MustDo(http.StatusOK, "DELETE", mrdBase+"/v1/media/test.local/"+id2, admin.Token, nil)
	if mediaFiles(t, s)[mediaSHA(shared)] {
		t.Fatal("content left on disk after its last media ID was deleted")
	}
	mrdWantErr(t, s.Do("GET", mrdBase+"/v1/media/test.local/"+id2, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	// An image goes with its thumbnails.
	s.MustDo(http.StatusOK, "DELETE", mrdBase+"/v1/media/test.local/"+pic, admin.Token, nil)
	if mediaFiles(t, s)[mediaSHA(img)] {
		t.Fatal("image left on disk")
	}
	if st := mediaStatus(t, s, bob, mediaClientPath, "thumbnail", "test.local", pic); st != http.StatusNotFound {
		t.Fatalf("thumbnail of deleted media: %d", st)
	}

	mrdWantErr(t, s.Do("DELETE", mrdBase+"/v1/media/test.local/"+id1, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("DELETE", mrdBase+"/v1/media/other.example/"+id1, admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminMediaDeleteByDate(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	big := func(c byte) []byte { return bytes.Repeat([]byte{c}, 100) }
	small := mediaUpload(t, s, bob, "text/plain", []byte("tiny"), "s.txt")
	old := mediaUpload(t, s, bob, "text/plain", big('a'), "a.txt")
	protected := mediaUpload(t, s, bob, "text/plain", big('b'), "b.txt")
	avatar := mediaUpload(t, s, bob, "text/plain", big('c'), "c.txt")
	roomAvatar := mediaUpload(t, s, bob, "text/plain", big('d'), "d.txt")
	s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/protect/"+protected, admin.Token, map[string]any{})
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.ID)+"/avatar_url", bob.Token,
		map[string]any{"avatar_url": "mxc://test.local/" + avatar})
	room := s.CreateRoom(bob, nil)
	s.MustDo(http.StatusOK, "PUT", testserver.RoomPath(room, "/state/m.room.avatar/"), bob.Token, map[string]any{"url": "mxc://test.local/" + roomAvatar})

	exists := func(id string) bool {
		return s.Do("GET", mrdBase+"/v1/media/test.local/"+id, admin.Token, nil).Status == http.StatusOK
	}
	later := time.Now().Add(time.Minute).UnixMilli()

	// Nothing is older than the distant past.
	r := s.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/delete?before_ts=1", admin.Token, map[string]any{})
	if r.JSON["total"] != float64(0) {
		t.Fatalf("before_ts=1 deleted %s", r.Body)
	}
	mrdWantErr(t, s.Do("POST", fmt.Sprintf("%s/v1/media/delete?before_ts=%d", mrdBase, later), bob.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	r = s.MustDo(http.StatusOK, "POST", fmt.Sprintf("%s/v1/media/delete?before_ts=%d&size_gt=10", mrdBase, later), admin.Token, map[string]any{})
	if got := fmt.Sprint(r.JSON["deleted_media"], r.JSON["total"]); got != fmt.Sprintf("[%s] 1", old) {
		t.Fatalf("delete by date answered %s, want only %s", r.Body, old)
	}
	if exists(old) || !exists(small) || !exists(protected) || !exists(avatar) || !exists(roomAvatar) {
		t.Fatalf("after delete: old %v small %v protected %v avatar %v room avatar %v", exists(old), exists(small), exists(protected), exists(avatar), exists(roomAvatar))
	}
	if mediaFiles(t, s)[mediaSHA(big('a'))] {
		t.Fatal("deleted media's content left on disk")
	}

	// keep_profiles=false takes the avatars too; the deprecated path with
	// the server name works alike.
	r = s.MustDo(http.StatusOK, "POST", fmt.Sprintf("%s/v1/media/test.local/delete?before_ts=%d&size_gt=10&keep_profiles=false", mrdBase, later), admin.Token, map[string]any{})
	if r.JSON["total"] != float64(2) || exists(avatar) || exists(roomAvatar) || !exists(protected) || !exists(small) {
		t.Fatalf("keep_profiles=false answered %s", r.Body)
	}

	for q, code := range map[string]string{
		"":                                 "M_MISSING_PARAM",
		"?before_ts=-1":                    "M_INVALID_PARAM",
		"?before_ts=abc":                   "M_INVALID_PARAM",
		"?before_ts=5&size_gt=-3":          "M_INVALID_PARAM",
		"?before_ts=5&keep_profiles=maybe": "M_INVALID_PARAM",
	} {
		mrdWantErr(t, s.Do("POST", mrdBase+"/v1/media/delete"+q, admin.Token, map[string]any{}), http.StatusBadRequest, code)
	}
	mrdWantErr(t, s.Do("POST", mrdBase+"/v1/media/other.example/delete?before_ts=5", admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
}

func mediaIDsOf(r *testserver.Response) []string {
	var ids []string
	list, _ := r.JSON["media"].([]any)
	for _, m := range list {
		ids = append(ids, m.(map[string]any)["media_id"].(string))
	}
	return ids
}

func TestAdminMediaUserList(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	var ids []string
	for i, size := range []int{30, 10, 20} {
		ids = append(ids, mediaUpload(t, s, bob, "text/plain", bytes.Repeat([]byte{byte('a' + i)}, size), fmt.Sprintf("%d.txt", i)))
		time.Sleep(5 * time.Millisecond) // distinct created_ts
	}
	path := mrdBase + "/v1/users/" + url.PathEscape(bob.ID) + "/media"

	r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil)
	if got := mediaIDsOf(r); fmt.Sprint(got) != fmt.Sprint(ids) || r.JSON["total"] != float64(3) || r.JSON["next_token"] != nil {
		t.Fatalf("list: %s", r.Body)
	}
	first := r.JSON["media"].([]any)[0].(map[string]any)
	if first["media_length"] != float64(30) || first["upload_name"] != "0.txt" || first["media_type"] != "text/plain" ||
		first["quarantined_by"] != nil || first["safe_from_quarantine"] != false {
		t.Errorf("first entry: %v", first)
	}
	r = s.MustDo(http.StatusOK, "GET", path+"?limit=2", admin.Token, nil)
	if got := mediaIDsOf(r); len(got) != 2 || r.JSON["next_token"] != float64(2) {
		t.Fatalf("limit=2: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", path+"?from=2", admin.Token, nil)
	if got := mediaIDsOf(r); fmt.Sprint(got) != fmt.Sprint(ids[2:]) || r.JSON["next_token"] != nil {
		t.Fatalf("from=2: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", path+"?order_by=media_length&dir=b", admin.Token, nil)
	if got := mediaIDsOf(r); fmt.Sprint(got) != fmt.Sprint([]string{ids[0], ids[2], ids[1]}) {
		t.Fatalf("by size, largest first: %v", got)
	}

	for q, code := range map[string]string{
		"?from=-1": "M_INVALID_PARAM", "?limit=abc": "M_INVALID_PARAM",
		"?order_by=size": "M_INVALID_PARAM", "?dir=up": "M_INVALID_PARAM",
	} {
		mrdWantErr(t, s.Do("GET", path+q, admin.Token, nil), http.StatusBadRequest, code)
		mrdWantErr(t, s.Do("DELETE", path+q, admin.Token, nil), http.StatusBadRequest, code)
	}
	mrdWantErr(t, s.Do("GET", path, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	mrdWantErr(t, s.Do("DELETE", path, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	unknown := mrdBase + "/v1/users/" + url.PathEscape("@nobody:test.local") + "/media"
	mrdWantErr(t, s.Do("GET", unknown, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("DELETE", unknown, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	remote := mrdBase + "/v1/users/" + url.PathEscape("@bob:other.example") + "/media"
	mrdWantErr(t, s.Do("GET", remote, admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")

	// DELETE removes the page the same parameters list: the two smallest.
	r = s.MustDo(http.StatusOK, "DELETE", path+"?order_by=media_length&limit=2", admin.Token, nil)
	if got := fmt.Sprint(r.JSON["deleted_media"], r.JSON["total"]); got != fmt.Sprintf("[%s %s] 2", ids[1], ids[2]) {
		t.Fatalf("delete answered %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", path, admin.Token, nil)
	if got := mediaIDsOf(r); fmt.Sprint(got) != fmt.Sprint(ids[:1]) || r.JSON["total"] != float64(1) {
		t.Fatalf("after delete: %s", r.Body)
	}
	if st := mediaStatus(t, s, bob, mediaClientPath, "download", "test.local", ids[1]); st != http.StatusNotFound {
		t.Fatalf("deleted media downloads: %d", st)
	}
}

func TestAdminMediaStatistics(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	s.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob.ID)+"/displayname", bob.Token, map[string]any{"displayname": "Bobby Tables"})
	mediaUpload(t, s, bob, "text/plain", []byte("abc"), "1")
	mediaUpload(t, s, bob, "text/plain", []byte("defg"), "2")
	mediaUpload(t, s, carol, "text/plain", bytes.Repeat([]byte("x"), 10), "3")
	path := mrdBase + "/v1/statistics/users/media"

	users := func(r *testserver.Response) []string {
		var out []string
		list, _ := r.JSON["users"].([]any)
		for _, u := range list {
			m := u.(map[string]any)
			out = append(out, fmt.Sprintf("%s:%v:%v:%v", m["user_id"], m["displayname"], m["media_count"], m["media_length"]))
		}
		return out
	}
	bobRow, carolRow := bob.ID+":Bobby Tables:2:7", carol.ID+":carol:1:10"
	r := s.MustDo(http.StatusOK, "GET", path, admin.Token, nil)
	if got := users(r); fmt.Sprint(got) != fmt.Sprint([]string{bobRow, carolRow}) || r.JSON["total"] != float64(2) || r.JSON["next_token"] != nil {
		t.Fatalf("statistics: %v %s", got, r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", path+"?order_by=media_length&dir=b", admin.Token, nil)
	if got := users(r); fmt.Sprint(got) != fmt.Sprint([]string{carolRow, bobRow}) {
		t.Fatalf("by size, largest first: %v", got)
	}
	r = s.MustDo(http.StatusOK, "GET", path+"?limit=1", admin.Token, nil)
	if got := users(r); len(got) != 1 || r.JSON["next_token"] != float64(1) || r.JSON["total"] != float64(2) {
		t.Fatalf("limit=1: %s", r.Body)
	}
	for term, want := range map[string]string{"bobby": bobRow, "CARO": carolRow} {
		r = s.MustDo(http.StatusOK, "GET", path+"?search_term="+term, admin.Token, nil)
		if got := users(r); fmt.Sprint(got) != fmt.Sprint([]string{want}) {
			t.Errorf("search_term=%s: %v", term, got)
		}
	}
	r = s.MustDo(http.StatusOK, "GET", fmt.Sprintf("%s?from_ts=%d", path, time.Now().Add(time.Hour).UnixMilli()), admin.Token, nil)
	if r.JSON["total"] != float64(0) {
		t.Fatalf("from_ts in the future: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", fmt.Sprintf("%s?until_ts=%d", path, time.Now().Add(time.Hour).UnixMilli()), admin.Token, nil)
	if r.JSON["total"] != float64(2) {
		t.Fatalf("until_ts in the future: %s", r.Body)
	}

	for _, q := range []string{"?from=-1", "?limit=x", "?order_by=name", "?dir=z", "?search_term=", "?from_ts=-5", "?from_ts=10&until_ts=5"} {
		mrdWantErr(t, s.Do("GET", path+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	mrdWantErr(t, s.Do("GET", path, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}

// Remote media cached by a server: quarantined and purged by its admin; a
// quarantined local media is not served to other servers either.
func TestAdminMediaRemoteCache(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	admin := a.Register("admin", "pw")
	mrdMakeAdmin(t, a, admin)
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	remote := mediaUpload(t, b, bob, "text/plain", []byte("from hs2"), "r.txt")

	if st := mediaStatus(t, a, alice, mediaClientPath, "download", "hs2.test", remote); st != http.StatusOK {
		t.Fatalf("fetching remote media: %d", st)
	}
	if info := mediaInfo(t, a, admin, "hs2.test", remote); info["media_origin"] != "hs2.test" || info["media_length"] != float64(8) {
		t.Fatalf("cached media info: %v", info)
	}

	a.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/quarantine/hs2.test/"+remote, admin.Token, map[string]any{})
	if st := mediaStatus(t, a, alice, mediaClientPath, "download", "hs2.test", remote); st != http.StatusNotFound {
		t.Fatalf("quarantined remote media: %d", st)
	}
	a.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/unquarantine/hs2.test/"+remote, admin.Token, map[string]any{})
	mrdWantErr(t, a.Do("DELETE", mrdBase+"/v1/media/hs2.test/"+remote, admin.Token, nil), http.StatusBadRequest, "M_UNKNOWN")

	// Nothing was accessed before the distant past; everything before a
	// minute from now.
	r := a.MustDo(http.StatusOK, "POST", mrdBase+"/v1/purge_media_cache?before_ts=1", admin.Token, map[string]any{})
	if r.JSON["deleted"] != float64(0) {
		t.Fatalf("purge before_ts=1: %s", r.Body)
	}
	r = a.MustDo(http.StatusOK, "POST", fmt.Sprintf("%s/v1/purge_media_cache?before_ts=%d", mrdBase, time.Now().Add(time.Minute).UnixMilli()), admin.Token, map[string]any{})
	if r.JSON["deleted"] != float64(1) {
		t.Fatalf("purge: %s", r.Body)
	}
	mrdWantErr(t, a.Do("GET", mrdBase+"/v1/media/hs2.test/"+remote, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if mediaFiles(t, a)[mediaSHA([]byte("from hs2"))] {
		t.Fatal("purged media left on disk")
	}
	// Local media is never purged.
	local := mediaUpload(t, a, alice, "text/plain", []byte("local"), "l.txt")
	a.MustDo(http.StatusOK, "POST", fmt.Sprintf("%s/v1/purge_media_cache?before_ts=%d", mrdBase, time.Now().Add(time.Minute).UnixMilli()), admin.Token, map[string]any{})
	mediaInfo(t, a, admin, "hs1.test", local)
	// Purged media is fetched again when asked for.
	if st := mediaStatus(t, a, alice, mediaClientPath, "download", "hs2.test", remote); st != http.StatusOK {
		t.Fatalf("fetching purged media again: %d", st)
	}

	// Quarantined local media is not served over federation.
	a.MustDo(http.StatusOK, "POST", mrdBase+"/v1/media/quarantine/hs1.test/"+local, admin.Token, map[string]any{})
	if st := mediaStatus(t, b, bob, mediaClientPath, "download", "hs1.test", local); st != http.StatusNotFound {
		t.Fatalf("quarantined media fetched by another server: %d", st)
	}

	mrdWantErr(t, a.Do("POST", mrdBase+"/v1/purge_media_cache", admin.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	mrdWantErr(t, a.Do("POST", mrdBase+"/v1/purge_media_cache?before_ts=-1", admin.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	mrdWantErr(t, a.Do("POST", mrdBase+"/v1/purge_media_cache?before_ts=1", alice.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
}
