package server

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"lambdadb/internal/session"
	"lambdadb/lambda"
	"lambdadb/shard"
)

// After a deploy commits, the node that took it tells every member it sees
// up over internal RPC, and each compiles the new version in the
// background (lambda.Engine.Precompile); the deploy answers once they
// report it compiled or Config.DeployCompileWait passes. A member that
// misses the notice compiles at its first call, as before
// (docs/adr/0015-compile-on-deploy.md).

// precompilePath is the internal RPC route of deploy notices.
const precompilePath = shard.ExtPrefix + "fn/precompile"

// DefaultDeployCompileWait is Config.DeployCompileWait's default.
const DefaultDeployCompileWait = 10 * time.Second

// headerCompiledOn lists, on a deploy's answer, the nodes that reported the
// new version compiled before it was sent.
const headerCompiledOn = "X-Compiled-On"

// precompileReq is a deploy notice.
type precompileReq struct {
	Name    string `msgpack:"n"` // stored name
	Version uint64 `msgpack:"v"`
	Session string `msgpack:"t"` // covers the deploy
	// WaitMS is how long the peer waits for its compile before it
	// answers (0: it answers at once).
	WaitMS int64 `msgpack:"w"`
}

// precompileResp answers a deploy notice.
type precompileResp struct {
	Compiled bool   `msgpack:"c"`
	Err      string `msgpack:"e,omitempty"`
}

// maxPrecompileBody bounds a deploy notice.
const maxPrecompileBody = 64 << 10

func (s *Server) servePrecompile(w http.ResponseWriter, r *http.Request) {
	var resp precompileResp
	var req precompileReq
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPrecompileBody))
	if err == nil {
		err = msgpack.Unmarshal(body, &req)
	}
	var tok session.Token
	if err == nil {
		tok, err = session.Decode(req.Session)
	}
	if err == nil {
		err = lambda.ValidateStoredName(req.Name)
	}
	switch {
	case err != nil:
		resp.Err = err.Error()
	case req.WaitMS > 0:
		ctx, cancel := context.WithTimeout(r.Context(), min(time.Duration(req.WaitMS)*time.Millisecond, time.Minute))
		resp.Compiled, err = s.fns.PrecompileWait(ctx, req.Name, req.Version, tok)
		cancel()
		if err != nil {
			resp.Err = err.Error()
		}
	default:
		s.fns.Precompile(req.Name, req.Version, tok)
		resp.Compiled = s.fns.CompiledVersion(req.Name, req.Version)
	}
	b, _ := msgpack.Marshal(&resp)
	w.Header().Set("Content-Type", "application/msgpack")
	_, _ = w.Write(b)
}

// announceDeploy tells every member this node sees up that f was deployed,
// so they compile it now, and waits up to the deploy wait for them to
// report it compiled. It returns the IDs of the members that did (this
// node included when it holds f compiled), sorted.
func (s *Server) announceDeploy(ctx context.Context, f *lambda.Function, tok session.Token) []string {
	if !s.fns.PrecompileEnabled() {
		if s.fns.Compiled(f) {
			return []string{s.node.ID()}
		}
		return nil
	}
	wait := s.deployWait
	req := precompileReq{Name: f.Name, Version: f.Version, Session: tok.Encode()}
	if wait > 0 {
		req.WaitMS = max(wait.Milliseconds(), 1)
	}
	// The notices outlive the deploy's request: a client that hangs up
	// does not stop the peers from compiling.
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(wait, 0)+5*time.Second)
	var mu sync.Mutex
	var compiled []string
	var wg sync.WaitGroup
	for _, p := range s.node.Peers() {
		if !p.Up {
			continue // it compiles at its first call
		}
		if p.ID == s.node.ID() {
			// The deploy's validation compiled it here; compile again only
			// if that copy is gone.
			done := s.fns.Precompile(f.Name, f.Version, tok)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if wait > 0 && done != nil {
					select {
					case <-done:
					case <-nctx.Done():
					}
				}
				if s.fns.CompiledVersion(f.Name, f.Version) {
					mu.Lock()
					compiled = append(compiled, p.ID)
					mu.Unlock()
				}
			}()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp precompileResp
			err := s.node.CallInternal(nctx, p.Addr, precompilePath, &req, &resp)
			switch {
			case err != nil:
				s.log.Warn("deploy notice not delivered; the node compiles at its first call", "function", f.Name, "node", p.ID, "err", err)
			case resp.Err != "":
				s.log.Warn("deploy notice refused; the node compiles at its first call", "function", f.Name, "node", p.ID, "err", resp.Err)
			case resp.Compiled:
				mu.Lock()
				compiled = append(compiled, p.ID)
				mu.Unlock()
			}
		}()
	}
	// Without a wait, still answer after the members took the notice (so
	// calls sent on the answer find the compile under way), within
	// noticeWait.
	all := make(chan struct{})
	go func() { wg.Wait(); cancel(); close(all) }()
	if wait <= 0 {
		t := time.NewTimer(noticeWait)
		defer t.Stop()
		select {
		case <-all:
		case <-t.C:
		}
		return nil
	}
	<-all
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(compiled)
	return compiled
}

// noticeWait bounds how long a deploy that does not wait for compiles
// waits for its notices to be taken.
const noticeWait = 2 * time.Second

// compiledOn formats the X-Compiled-On header.
func compiledOn(ids []string) string { return strings.Join(ids, ",") }
