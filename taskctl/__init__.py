"""taskctl: control taskmasterd over D-Bus (commands and an interactive shell).

The D-Bus service and this client arrive with the D-Bus issue; until then the
package exists so the layout of SPEC section 1 holds.
"""
