"""Gateway recipes: one small Flask shop per payment flow, each with a faithful in-process
fake of the gateway's side (no network, no SDK). The pages are in ``docs/recipes/``.

* ``stripe_checkout`` — Stripe Checkout, confirmed by the ``checkout.session.completed``
  webhook (server to server)
* ``paypal_return`` — PayPal: the shopper returns with ``token``/``PayerID`` (GET, or a
  cross-site POST), the shop captures server-side, ``@on_order_confirmed`` tracks
* ``three_d_secure`` — the issuer's ACS posts the shopper back cross-site (``cres`` /
  ``PaRes``): no ``SameSite=Lax`` cookie, so ``track_conversion`` uses the snapshot or the
  signed mirror cookie (``NEUROON_SNAPSHOTS="both"``)
* ``redsys`` — a Redsys-style signed notification (``Ds_MerchantParameters`` +
  ``Ds_Signature``) confirms the order; ``URLOK`` only displays

``shop`` holds what the four share: a two-product catalogue and an order store.
Each module has ``create_app(config=None) -> Flask``; run one with
``flask --app examples.recipes.stripe_checkout run``.
"""
