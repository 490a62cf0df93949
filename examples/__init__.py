"""Runnable examples for flask-neuroon.

* ``examples.shop`` — a small Flask shop that uses flask-neuroon the documented way
* ``examples.gateway`` — a fake payment gateway on another site (PayPal/Redsys-style return)
* ``examples.demo`` — ``python -m examples.demo``: the whole journey, checked end to end
"""
