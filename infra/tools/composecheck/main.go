// composecheck validates Compose files the way `docker compose config` does, without a Docker
// engine or the compose CLI plugin: it runs the compose-spec loader (github.com/compose-spec/compose-go,
// the library inside `docker compose`), which checks the file against the Compose JSON schema,
// interpolates variables, normalizes it and checks consistency (undefined volumes, networks,
// depends_on targets, secrets...).
//
// Interpolation sees only the variables given with -env NAME=VALUE, never the caller's environment, so
// the result does not depend on who runs it: by default every ${VAR:-default} takes its default.
//
// Services behind a profile are only checked when the profile is enabled with -profile NAME
// ('*' enables all of them).
//
//	composecheck [-print] [-profile NAME]... [-env NAME=VALUE]... FILE...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, ",") }

func (e *envFlags) Set(value string) error {
	if !strings.Contains(value, "=") {
		return fmt.Errorf("-env wants NAME=VALUE, got %q", value)
	}
	*e = append(*e, value)
	return nil
}

type listFlags []string

func (l *listFlags) String() string { return strings.Join(*l, ",") }

func (l *listFlags) Set(value string) error {
	*l = append(*l, value)
	return nil
}

func main() {
	var env envFlags
	var profiles listFlags
	printConfig := flag.Bool("print", false, "print the normalized configuration (like `docker compose config`)")
	flag.Var(&env, "env", "NAME=VALUE visible to ${...} interpolation (repeatable)")
	flag.Var(&profiles, "profile", "enable a Compose profile; '*' enables all (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-print] [-profile NAME]... [-env NAME=VALUE]... FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range flag.Args() {
		if err := check(file, env, profiles, *printConfig); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(file string, env, profiles []string, printConfig bool) error {
	options, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithEnv(env),
		cli.WithProfiles(profiles),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	if printConfig {
		out, err := project.MarshalYAML()
		if err != nil {
			return err
		}
		os.Stdout.Write(out)
	}
	services := project.ServiceNames()
	sort.Strings(services)
	volumes := make([]string, 0, len(project.Volumes))
	for name := range project.Volumes {
		volumes = append(volumes, name)
	}
	sort.Strings(volumes)
	fmt.Printf("%s: valid (project %s; services: %s; volumes: %s)\n",
		file, project.Name, strings.Join(services, ", "), strings.Join(volumes, ", "))
	return nil
}
