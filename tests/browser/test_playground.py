"""The playground page (GET / of the HTTP port) in headless Chromium, against a real
server: every panel plots, the numbers in its tables are the SDK's for the same inputs,
the API's errors are shown as the API states them, and nothing is fetched from
anywhere but the server.

The waits below are ceilings on an outcome (a panel's render count, its state), never
assertions on time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import numpy as np
import pytest
from _browser import SERVER_SETTINGS, console_errors, foreign, requested_urls

from actgrad import Client
from actgrad.wire import dtype_info
from actgrad_server.app import ActgradServer
from actgrad_server.http import playground

PANELS = ("functions", "softmax", "neuron", "flow")
CEILING = 120.0  # seconds an outcome may take on a loaded machine before the test fails
Array = np.ndarray[Any, Any]


def _origin(server: ActgradServer) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def _wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, CEILING, poll_frequency=0.05).until(condition, what)


def _open(driver: Any, server: ActgradServer, query: dict[str, str] | None = None) -> None:
    driver.get("about:blank")
    console_errors(driver)  # read to empty the logs
    requested_urls(driver)
    suffix = f"/?{urlencode(query)}" if query else "/"
    driver.get(_origin(server) + suffix)
    _wait(
        driver,
        lambda d: d.execute_script(
            "return document.documentElement.dataset.ready === '1'"
            " || document.getElementById('page-error').textContent !== ''"
        ),
        "the page's first plots (or its error)",
    )


def _renders(driver: Any, panel: str) -> int:
    return int(driver.find_element("id", panel).get_attribute("data-renders"))


def _settled(driver: Any, panel: str, after: int) -> str:
    """Waits until `panel` rendered again after `after` renders, or shows an error."""

    def done(d: Any) -> str | bool:
        section = d.find_element("id", panel)
        state = section.get_attribute("data-state")
        if state == "error":
            return "error"
        return "ready" if state == "ready" and _renders(d, panel) > after else False

    outcome: str = _wait(driver, done, f"the {panel} panel's next render")
    return outcome


def _change(driver: Any, element_id: str, value: str | bool) -> None:
    """Sets a control as a person would leave it: its value, then a change event."""
    driver.execute_script(
        "const el = document.getElementById(arguments[0]);"
        "if (el.type === 'checkbox') el.checked = arguments[1]; else el.value = arguments[1];"
        "el.dispatchEvent(new Event('change', {bubbles: true}));",
        element_id,
        value,
    )


def _table(driver: Any, table_id: str) -> dict[str, list[str]]:
    """A table of the page as columns of cell texts, by header."""
    head, rows = driver.execute_script(
        "const t = document.getElementById(arguments[0]);"
        "return [[...t.tHead.rows[0].cells].map(c => c.textContent),"
        " [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.textContent))];",
        table_id,
    )
    return {name: [row[i] for row in rows] for i, name in enumerate(head)}


def _numbers(cells: list[str], dtype: Any = np.float64) -> Array:
    """Cell texts as numbers of `dtype` (the texts are the server's shortest decimals)."""
    return np.array([float(c) for c in cells], dtype=np.float64).astype(dtype)


def _error(driver: Any, box: str) -> str:
    text: str = driver.find_element("id", box).text
    return text


@pytest.fixture(scope="module")
def sdk(page_server: ActgradServer) -> Iterator[Client]:
    client = Client(f"127.0.0.1:{page_server.port}", timeout=60.0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture()
def page(driver: Any, page_server: ActgradServer) -> Iterator[Any]:
    yield driver
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_page_plots_every_panel_from_its_own_server_alone(
    page: Any, page_server: ActgradServer, report: dict[str, str]
) -> None:
    _open(page, page_server)
    for panel in PANELS:
        section = page.find_element("id", panel)
        assert section.get_attribute("data-state") == "ready", panel
        assert _renders(page, panel) == 1, panel
        assert page.find_elements("css selector", f"#{panel} svg, #{panel} table"), panel
    assert console_errors(page) == []
    urls = requested_urls(page)
    assert foreign(urls, _origin(page_server)) == []
    paths = {u.removeprefix(_origin(page_server)).split("?")[0] for u in urls}
    assert {"/", "/playground/playground.js", "/playground/playground.css"} <= paths
    assert {"/v1/functions", "/openapi.json", "/v1/gradient", "/v1/softmax"} <= paths
    assert {"/v1/dense_vjp", "/v1/gradient_flow"} <= paths
    # Reported at the end of the run, not asserted.
    sizes = page.execute_script(
        "return performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).filter(e => !e.name.includes('/v1/')"
        " && !e.name.endsWith('/openapi.json')).map(e => e.encodedBodySize);"
    )
    report["page weight"] = (
        f"{playground.page_bytes()} bytes in {len(playground.ASSETS)} files "
        f"({sum(sizes)} bytes received by the browser, uncompressed)"
    )
    first = page.execute_script("return document.documentElement.dataset.firstPlotMs")
    report["time to first plot"] = f"{first} ms from navigation (headless Chromium, this machine)"


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_the_functions_table_is_the_sdks_values(
    page: Any, page_server: ActgradServer, sdk: Client, dtype: str
) -> None:
    query = {"fn": "gelu,elu,softplus", "p0": "approximate:tanh", "p1": "alpha:0.5"}
    _open(page, page_server, {**query, "dtype": dtype, "xmin": "-4", "xmax": "3", "n": "71"})
    assert page.find_element("id", "functions").get_attribute("data-state") == "ready"
    columns = _table(page, "fn-values")
    numpy_dtype = dtype_info(dtype).numpy
    x = _numbers(columns["x"])
    assert len(x) == 71 and x[0] == -4.0 and x[-1] == 3.0
    inputs = x.astype(numpy_dtype)
    for label, function, params in (
        ("1. gelu", "gelu", {"approximate": "tanh"}),
        ("2. elu", "elu", {"alpha": 0.5}),
        ("3. softplus", "softplus", {}),
    ):
        f = _numbers(columns[f"{label} f(x)"], numpy_dtype)
        grad = _numbers(columns[f"{label} f'(x)"], numpy_dtype)
        np.testing.assert_array_equal(f, sdk.activate(inputs, function, **params))
        np.testing.assert_array_equal(grad, sdk.gradient(inputs, function, **params))
    assert console_errors(page) == []


def test_a_change_of_function_or_parameter_replots_and_the_url_keeps_it(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    _open(page, page_server)
    before = _renders(page, "functions")
    _change(page, "fn-0", "elu")
    assert _settled(page, "functions", before) == "ready"
    assert "1. elu f(x)" in _table(page, "fn-values")
    assert page.find_element("css selector", "#fn-about h3").text == "1. elu"
    # The parameter as the catalog states it (GET /v1/functions), beside the plots.
    with httpx.Client(base_url=_origin(page_server), timeout=60.0) as http:
        (alpha,) = http.get("/v1/functions/elu").json()["params"]
    about = page.find_element("id", "fn-about").text
    assert f"param alpha\n{alpha['kind']}, default {alpha['default']:g}" in about
    assert alpha["description"] in about
    before = _renders(page, "functions")
    _change(page, "fn-0-alpha", "2")
    assert _settled(page, "functions", before) == "ready"
    columns = _table(page, "fn-values")
    x = _numbers(columns["x"], np.float32)  # the page's default dtype
    np.testing.assert_array_equal(
        _numbers(columns["1. elu f(x)"], np.float32), sdk.activate(x, "elu", alpha=2.0)
    )
    np.testing.assert_array_equal(
        _numbers(columns["1. elu f'(x)"], np.float32), sdk.gradient(x, "elu", alpha=2.0)
    )
    # The address is the state: opened again, it shows the same table.
    url = page.current_url
    assert "fn=elu" in url and "alpha%3A2" in url
    page.get(url)
    _wait(page, lambda d: d.execute_script("return document.documentElement.dataset.ready"), "")
    assert _table(page, "fn-values") == columns


def test_the_readout_follows_the_keys_and_the_pointer(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open(page, page_server, {"fn": "relu", "xmin": "-1", "xmax": "1", "n": "21"})
    plot = page.find_element("id", "fn-plot-f")
    plot.send_keys(Keys.ARROW_RIGHT)  # from the middle (x = 0) one point right
    readout = page.find_element("id", "fn-readout").text
    assert readout.startswith("x = 0.1 ") and "1. relu: f = 0.1, f' = 1" in readout
    plot.send_keys(Keys.HOME)
    assert page.find_element("id", "fn-readout").text.startswith("x = -1 ")
    ActionChains(page).move_to_element(page.find_element("id", "fn-plot-g")).perform()
    # The pointer at the middle of the plot: the point nearest its x (plot area 66..628
    # of 640 units: x = -0.096).
    assert page.find_element("id", "fn-readout").text.startswith("x = -0.1 ")
    cursors = page.find_elements("css selector", "#functions .cursor[visibility=visible]")
    assert len(cursors) == 2  # f and f' share the x axis and the cursor


def test_the_softmax_preset_shows_the_seeds_figures(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    _open(page, page_server)
    labels = [e.text for e in page.find_elements("css selector", "#sm-plot-p .bar-label")]
    assert labels == ["0.659", "0.242", "0.099"]
    columns = _table(page, "sm-values")
    logits = np.array([2.0, 1.0, 0.1])
    np.testing.assert_array_equal(_numbers(columns["softmax"]), sdk.softmax(logits))
    np.testing.assert_array_equal(
        _numbers(columns["gᵀJ"]), sdk.gradient(logits, "softmax", grad_output=[1.0, 0.0, 0.0])
    )
    before = _renders(page, "softmax")
    page.find_element("id", "sm-log").click()
    _settled(page, "softmax", before)
    before = _renders(page, "softmax")
    _change(page, "sm-temperature", "0.5")
    assert _settled(page, "softmax", before) == "ready"
    columns = _table(page, "sm-values")
    np.testing.assert_array_equal(
        _numbers(columns["log-softmax"]), sdk.softmax(logits, temperature=0.5, log=True)
    )
    expected = sdk.gradient(
        logits, "softmax", grad_output=[1.0, 0.0, 0.0], temperature=0.5, log=True
    )
    np.testing.assert_array_equal(_numbers(columns["gᵀJ"]), expected)
    assert console_errors(page) == []


def test_the_neuron_shows_the_sdks_dense_vjp_and_the_chain_rules_factors(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    _open(page, page_server)
    x = np.array([1.0, -2.0, 0.5])
    weight = np.array([[0.2, -0.5, 1.0], [0.7, 0.1, -0.3]])
    bias = np.array([0.1, -0.2])
    g = np.array([1.0, -0.5])
    for activation in ("sigmoid", "softmax"):
        if activation != "sigmoid":
            before = _renders(page, "neuron")
            _change(page, "nn-activation", activation)
            assert _settled(page, "neuron", before) == "ready"
        result = sdk.dense_vjp(
            x,
            weight,
            bias,
            activation=activation,
            grad_output=g,
            return_output=True,
            return_net_output=True,
        )
        forward = _table(page, "nn-forward")
        chain = _table(page, "nn-backward")
        np.testing.assert_array_equal(_numbers(forward["z"]), result.net_output)
        np.testing.assert_array_equal(_numbers(forward[f"y = {activation}(z)"]), result.output)
        np.testing.assert_array_equal(_numbers(chain["∂L/∂b"]), result.grad_bias)
        np.testing.assert_array_equal(
            _numbers(chain["δ = ∂L/∂z"]), sdk.gradient(result.net_output, activation, grad_output=g)
        )
        if activation == "sigmoid":
            np.testing.assert_array_equal(
                _numbers(chain["sigmoid'(z)"]), sdk.gradient(result.net_output, "sigmoid")
            )
        else:
            assert chain["softmax'(z)"] == ["(Jacobian)", "(Jacobian)"]
        grad_weight = _table(page, "nn-grad-weight")
        for i in range(3):
            np.testing.assert_array_equal(
                _numbers(grad_weight[f"i={i + 1}"]), result.grad_weight[:, i]
            )
        np.testing.assert_array_equal(
            _numbers(_table(page, "nn-grad-input")["∂L/∂x"]), result.grad_input
        )
    # A tensor parameter (prelu's slope, a number: 0-d) and its gradient.
    before = _renders(page, "neuron")
    _change(page, "nn-activation", "prelu")
    assert _settled(page, "neuron", before) == "ready"
    slope = float(page.find_element("id", "nn-p-slope").get_attribute("value"))
    result = sdk.dense_vjp(
        x, weight, bias, activation="prelu", grad_output=g, slope=np.array(slope)
    )
    (shown,) = _table(page, "nn-grad-slope")["slope"]
    assert float(shown) == result.grad_params["slope"]
    assert console_errors(page) == []


def _flow_column(columns: dict[str, list[str]], name: str) -> Array:
    return _numbers([c for c in columns[name] if c != ""])


def test_the_flow_presets_show_the_vanishing_and_the_rescue(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    _open(page, page_server)  # the first preset is the page's default
    columns = _table(page, "flow-values")
    sigmoid, relu = _flow_column(columns, "1 grad_rms"), _flow_column(columns, "2 grad_rms")
    assert len(sigmoid) == len(relu) == 31
    assert sigmoid[0] / sigmoid[30] < 1e-10  # more than 10 orders of magnitude lost
    assert relu.max() / relu.min() < 10  # within 10x at every layer
    np.testing.assert_array_equal(
        sigmoid, sdk.gradient_flow("sigmoid", init="xavier_normal").grad_rms
    )
    expected = sdk.gradient_flow("relu", init="he_normal")
    np.testing.assert_array_equal(relu, expected.grad_rms)
    np.testing.assert_array_equal(_flow_column(columns, "2 act_rms"), expected.act_rms)
    np.testing.assert_array_equal(_flow_column(columns, "2 dead"), expected.dead)

    before = _renders(page, "flow")
    page.find_element("css selector", "[data-preset=rescue]").click()
    assert _settled(page, "flow", before) == "ready"
    columns = _table(page, "flow-values")
    plain = _flow_column(columns, "1 grad_rms")
    residual = _flow_column(columns, "2 grad_rms")
    normalized = _flow_column(columns, "3 grad_rms")
    assert plain[0] / plain[30] < 1e-10
    assert residual[0] / residual[30] > 1.0  # residual connections carry it back
    assert normalized[0] / normalized[30] > 1e-3
    np.testing.assert_array_equal(
        normalized,
        sdk.gradient_flow("sigmoid", init="xavier_normal", normalize=True).grad_rms,
    )
    summary = page.find_element("id", "flow-summary").text
    assert "residual" in summary and "normalize" in summary

    # init 'normal' takes its std from its own field.
    before = _renders(page, "flow")
    _change(page, "flow-0-init_std", "0.2")
    _change(page, "flow-0-init", "normal")
    assert _settled(page, "flow", before) == "ready"
    np.testing.assert_array_equal(
        _flow_column(_table(page, "flow-values"), "1 grad_rms"),
        sdk.gradient_flow("sigmoid", init="normal", init_std=0.2).grad_rms,
    )
    flow = parse_qs(urlsplit(page.current_url).query)["flow"][0]
    assert flow.split(",")[0] == "sigmoid:normal:30:256:0:0:0:0.2:128:float64:"
    assert console_errors(page) == []


def test_a_flow_configurations_parameters_batch_and_dtype_give_the_sdks_values(
    page: Any, page_server: ActgradServer, sdk: Client
) -> None:
    from selenium.webdriver.common.keys import Keys

    _open(page, page_server)
    with httpx.Client(base_url=_origin(page_server), timeout=60.0) as http:
        (alpha,) = http.get("/v1/functions/elu").json()["params"]
        flow_spec = http.get("/openapi.json").json()["paths"]["/v1/gradient_flow"]
    fields = flow_spec["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = fields["properties"]
    # batch and dtype start at the defaults /openapi.json states, within its ranges.
    batch = page.find_element("id", "flow-0-batch")
    assert batch.get_attribute("value") == str(fields["batch"]["default"])
    assert batch.get_attribute("min") == str(fields["batch"]["minimum"])
    dtype = page.find_element("id", "flow-0-dtype")
    assert dtype.get_attribute("value") == fields["dtype"]["default"]
    options = dtype.find_elements("tag name", "option")
    assert [o.get_attribute("value") for o in options] == fields["dtype"]["enum"]

    # A function with a parameter gets a control for it, at the catalog's default.
    before = _renders(page, "flow")
    _change(page, "flow-0-function", "elu")
    assert _settled(page, "flow", before) == "ready"
    control = page.find_element("id", "flow-0-p-alpha")
    assert float(control.get_attribute("value")) == alpha["default"]
    assert page.find_element("css selector", "label[for=flow-0-p-alpha]").text == "alpha"

    before = _renders(page, "flow")
    _change(page, "flow-0-p-alpha", "0.5")
    _change(page, "flow-0-batch", "16")
    assert _settled(page, "flow", before) == "ready"
    # By keyboard: float64 -> float32, the option above it.
    assert fields["dtype"]["enum"].index("float32") + 1 == fields["dtype"]["enum"].index("float64")
    before = _renders(page, "flow")
    dtype.send_keys(Keys.ARROW_UP)
    assert _settled(page, "flow", before) == "ready"
    assert dtype.get_attribute("value") == "float32"
    columns = _table(page, "flow-values")
    expected = sdk.gradient_flow("elu", init="xavier_normal", alpha=0.5, batch=16, dtype="float32")
    for name in ("grad_rms", "act_rms", "saturated", "dead"):
        np.testing.assert_array_equal(_flow_column(columns, f"1 {name}"), getattr(expected, name))
    in_float64 = sdk.gradient_flow("elu", init="xavier_normal", alpha=0.5, batch=16)
    assert not np.array_equal(expected.grad_rms, in_float64.grad_rms)  # the dtype was sent
    summary = page.find_element("id", "flow-summary").text
    assert "1. elu (alpha=0.5), xavier_normal, batch 16, float32" in summary

    # The address keeps them: opened again, it shows the same table.
    flow = parse_qs(urlsplit(page.current_url).query)["flow"][0]
    assert flow.split(",")[0] == "elu:xavier_normal:30:256:0:0:0::16:float32:alpha=0.5"
    page.get(page.current_url)
    _wait(page, lambda d: d.execute_script("return document.documentElement.dataset.ready"), "")
    assert page.find_element("id", "flow-0-p-alpha").get_attribute("value") == "0.5"
    assert _table(page, "flow-values") == columns
    assert console_errors(page) == []


def test_an_api_error_is_shown_as_the_api_states_it(page: Any, page_server: ActgradServer) -> None:
    _open(page, page_server)
    before = _renders(page, "softmax")
    _change(page, "sm-temperature", "0")
    assert _settled(page, "softmax", before) == "error"
    with httpx.Client(base_url=_origin(page_server), timeout=60.0) as http:
        body = {"x": [2, 1, 0.1], "temperature": 0, "log": False, "dtype": "float64"}
        softmax = http.post("/v1/softmax", json=body)
        gradient = http.post(
            "/v1/gradient",
            json={
                "x": [2, 1, 0.1],
                "function": "softmax",
                "params": {"temperature": 0, "log": False},
                "grad_output": [1, 0, 0],
                "dtype": "float64",
            },
        )
    assert softmax.status_code == gradient.status_code == 400
    shown = _error(page, "sm-error")
    assert shown in {f"HTTP 400: {a.json()['error']}" for a in (softmax, gradient)}
    # The only console errors are the browser's own lines about the refused requests.
    assert all("400" in e["message"] for e in console_errors(page))
    before = _renders(page, "softmax")
    _change(page, "sm-temperature", "1")
    assert _settled(page, "softmax", before) == "ready"
    assert _error(page, "sm-error") == ""


def test_draining_is_shown_as_the_api_states_it(driver: Any, browser_binaries: Any) -> None:
    server = ActgradServer(SERVER_SETTINGS)
    server.start()
    try:
        _open(driver, server)
        server.refusing.set()  # the drain's first step: every new request is refused
        before = _renders(driver, "softmax")
        _change(driver, "sm-x", "3, 1")
        assert _settled(driver, "softmax", before) == "error"
        with httpx.Client(timeout=60.0) as http:
            refused = http.post(f"{_origin(server)}/v1/softmax", json={"x": [3, 1]})
        assert refused.status_code == 503
        assert _error(driver, "sm-error") == f"HTTP 503: {refused.json()['error']}"
    finally:
        server.stop(0).wait(10)


def test_with_tokens_the_page_asks_for_one_and_sends_it(
    driver: Any, browser_binaries: Any, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    server = ActgradServer(dataclasses.replace(SERVER_SETTINGS, auth_token_file=str(tokens)))
    server.start()
    try:
        _open(driver, server)  # the page itself needs no token
        with httpx.Client(timeout=60.0) as http:
            refused = http.get(f"{_origin(server)}/v1/functions")
        assert refused.status_code == 401
        stated = f"HTTP 401: {refused.json()['error']}"
        assert driver.find_element("id", "token-form").is_displayed()
        assert _error(driver, "token-why") == stated
        assert _error(driver, "page-error") == stated
        for token in ("guess", "s3cret"):
            field = driver.find_element("id", "token")
            field.clear()
            field.send_keys(token)
            driver.find_element("css selector", "#token-form button").click()
            _wait(
                driver,
                lambda d: d.execute_script(
                    "return document.documentElement.dataset.ready === '1'"
                    " || !document.getElementById('token-form').hidden"
                ),
                "the token's outcome",
            )
            if token == "guess":
                assert driver.find_element("id", "token-form").is_displayed()
        for panel in PANELS:
            assert driver.find_element("id", panel).get_attribute("data-state") == "ready"
        assert not driver.find_element("id", "token-form").is_displayed()
    finally:
        driver.execute_script("sessionStorage.clear()")
        server.stop(0).wait(10)


@pytest.mark.parametrize("width", [390, 1440])
def test_readable_at_a_phones_width_and_a_desktops(
    page: Any, page_server: ActgradServer, width: int
) -> None:
    # Headless Chromium's window is never narrower than 500 px: a phone is emulated.
    page.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    _open(page, page_server)
    assert page.execute_script("return window.innerWidth") == width
    overflow = page.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    unlabelled = page.execute_script(
        "return [...document.querySelectorAll('input, select')].filter(e =>"
        " !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)"
    )
    assert unlabelled == []
