"""Where jobs run and where their results live: embedded store, local runner, FireWorks."""
