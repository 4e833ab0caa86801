"""mxknock's console: a Textual app on tty1 and the serial line, a client of mxknockd.

It talks to the daemon only through the control API (`appliance.control`); it never
touches iptables or the config file. Importing `tui` pulls in no Textual: `tui.app`
does, so the appliance and its CLI work without the console's dependencies.
"""
