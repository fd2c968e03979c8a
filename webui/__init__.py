"""fcnetd-webui: the unprivileged web UI. Everything it knows comes from
fcnetd over D-Bus: it never imports pyroute2, never reads the registry and
never runs `ip`."""
