// sazanami: the API key of a server started with --api-key, for the playground and the flow editor.
// The first /v1 call answered 401 asks for the key once (window.prompt); the tab keeps it in
// sessionStorage and sends it as "Authorization: Bearer KEY" on every /v1 call. Pages load without it.
"use strict";

(() => {
  const STORE = "sazanami-api-key";
  const plain = window.fetch.bind(window);

  function withKey(init, key) {
    const headers = new Headers((init && init.headers) || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    return { ...(init || {}), headers };
  }

  window.fetch = async (input, init) => {
    const url = new URL(typeof input === "string" ? input : input.url, location.href);
    if (url.origin !== location.origin || !url.pathname.startsWith("/v1")) return plain(input, init);
    let used = sessionStorage.getItem(STORE);
    let res = await plain(input, withKey(init, used));
    for (let tries = 0; res.status === 401 && tries < 3; tries++) {
      let key = sessionStorage.getItem(STORE);
      if (key === used) {  // not asked since this call was sent (parallel calls ask once)
        key = window.prompt("This server needs its API key (sazanami serve --api-key):");
        if (key === null) return res;
        key = key.trim();
        sessionStorage.setItem(STORE, key);
      }
      used = key;
      res = await plain(input, withKey(init, used));
    }
    return res;
  };
})();
