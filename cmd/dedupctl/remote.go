package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/seed42300104/dedup/admin"
)

// addrHelp documents --addr in the root command's help.
const addrHelp = `Live stores (--addr URL, or $DEDUP_ADDR when --dir is not given):
  get, explain, scan, stats and verify can ask the admin handler of a running
  process (package admin, mounted by the application) instead of opening
  --dir, which that process holds locked. The output and exit codes are the
  same as with --dir, except that stats' JSON adds the counters of the
  process's store, and stats --watch refreshes them with rates per second.
  The other commands refuse --addr. A scan gets at most
  the handler's limit of lines (10,000 unless the application set
  admin.Options.MaxScanLines) and exits 2 after them if there were more;
  verify makes the process's writes wait until it has read the whole store.
  The handler must not be reachable from outside: it reveals IDs and stored
  responses.`

// remoteAnnotation marks the commands that --addr serves.
const remoteAnnotation = "dedupctl/remote"

// client asks the admin handler at --addr.
type client struct {
	base string // the handler's URL, without a trailing slash
	http *http.Client
}

// resolveAddr decides, before cmd runs, whether it asks the admin handler:
// --addr given, or $DEDUP_ADDR set and --dir not given. A command that
// --addr does not serve refuses an --addr given on its command line, and
// ignores $DEDUP_ADDR.
func (g *globals) resolveAddr(cmd *cobra.Command) error {
	given := cmd.Flags().Changed("addr")
	if cmd.Annotations[remoteAnnotation] == "" {
		if given && cmd.HasParent() {
			return usageError{fmt.Errorf("%s does not work with --addr: only get, explain, scan, stats and verify do, and nothing that writes", cmd.Name())}
		}
		return nil
	}
	if !given && cmd.Flags().Changed("dir") || g.addr == "" {
		return nil
	}
	if given && cmd.Flags().Changed("dir") {
		return usageError{errors.New("give --dir or --addr, not both")}
	}
	u, err := url.Parse(g.addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--addr %q is not an http:// or https:// URL", g.addr)}
	}
	g.remote = &client{base: strings.TrimSuffix(g.addr, "/"), http: http.DefaultClient}
	return nil
}

// document asks path for one JSON document and prints it, as
// printDocument does.
func (c *client) document(cmd *cobra.Command, g *globals, path string, q url.Values, v any, table func() error) error {
	resp, err := c.get(cmd, path, q)
	if err != nil {
		return err
	}
	return c.printDocument(cmd, g, resp, v, table)
}

// printDocument prints the JSON document of resp: as it came with -o
// json, or decoded into v and printed by table otherwise. A problem that
// came with the document (verify's damage) is returned after it is
// printed.
func (c *client) printDocument(cmd *cobra.Command, g *globals, resp *http.Response, v any, table func() error) error {
	defer resp.Body.Close()
	var err error
	if g.output == "json" {
		_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
	} else if err = json.NewDecoder(resp.Body).Decode(v); err == nil {
		err = table()
	}
	if err != nil {
		return c.broken(err)
	}
	return c.problem(resp)
}

// lines asks path for JSON Lines. With -o json it copies them to stdout
// as they come; otherwise it gives each to table. A problem that ended
// the stream is returned after the lines before it.
func (c *client) lines(cmd *cobra.Command, g *globals, path string, q url.Values, table func(line []byte) error) error {
	resp, err := c.get(cmd, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			if g.output == "json" {
				_, err = cmd.OutOrStdout().Write(line)
			} else {
				err = table(line)
			}
			if err != nil {
				return err
			}
			continue
		}
		if err == io.EOF && len(line) == 0 {
			return c.problem(resp)
		}
		if err == nil || err == io.EOF {
			err = errors.New("the last line is cut short")
		}
		return c.broken(err)
	}
}

// get sends the request. An answer that is a problem is returned as the
// *admin.Problem error; dedupctl exits as it would have for the error of
// the store behind it.
func (c *client) get(cmd *cobra.Command, path string, q url.Values) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin handler at %s: %w", c.base, err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), admin.ProblemContentType) {
		defer resp.Body.Close()
		var p admin.Problem
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || p.Kind == "" {
			return nil, fmt.Errorf("admin handler at %s: %s with a problem that does not decode", c.base, resp.Status)
		}
		return nil, &p
	}
	if resp.StatusCode != http.StatusOK && resp.Header.Get(admin.ErrorHeader) == "" {
		resp.Body.Close()
		return nil, fmt.Errorf("admin handler at %s: %s from %s: is it the dedup admin handler?", c.base, resp.Status, u)
	}
	return resp, nil
}

// problem returns the problem in the header or trailer of a response
// whose body has been read to its end, if there is one.
func (c *client) problem(resp *http.Response) error {
	h := resp.Header.Get(admin.ErrorHeader)
	if h == "" {
		h = resp.Trailer.Get(admin.ErrorHeader)
	}
	if h == "" {
		return nil
	}
	var p admin.Problem
	if err := json.Unmarshal([]byte(h), &p); err != nil || p.Kind == "" {
		return fmt.Errorf("admin handler at %s: a %s that does not decode: %q", c.base, admin.ErrorHeader, h)
	}
	return &p
}

// broken is an answer that ends early or does not decode.
func (c *client) broken(err error) error {
	return fmt.Errorf("admin handler at %s: the answer is broken: %w", c.base, err)
}

// problemExit returns the exit code of a problem the admin handler
// answered: the code dedupctl gives the error behind it with --dir.
func problemExit(p *admin.Problem) int {
	switch p.Kind {
	case admin.KindUsage:
		return exitUsage
	case admin.KindCorrupt:
		return exitCorrupt
	case admin.KindPermission:
		return exitPermission
	}
	return exitError
}
