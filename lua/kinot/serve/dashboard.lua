-- The dashboard of `kinot serve` (GET /; docs/dashboard.md): one
-- self-contained page, its CSS and script inline, that reads the twin's JSON
-- API of the same server (/api/fleet, /api/devices, /api/changes polled for
-- the live feed, /api/devices/{sn} on a click) and sends commands through
-- kinot.serve.commands with the API token typed into it. Nothing outside
-- the server is fetched (no CDN, no font, no image): the Content-Security-
-- Policy says so to the browser too (only these inline blocks, by hash, and
-- connections to this origin). Everything from a device (a serial, a group
-- name, a bay, a platform's message) goes into the page as text
-- (textContent), never as markup.
local M = {}

local STYLE = [==[
:root{--bg:#0b1220;--panel:#131c2e;--panel2:#1a2540;--line:#263352;--text:#e6ecf5;--muted:#8d9ab3;
--free:#16a34a;--occ:#2563eb;--fault:#dc2626;--stale:#5b6478;--warn:#f59e0b;--ok:#22c55e}
*{box-sizing:border-box}
html,body{margin:0;height:100%}
body{background:var(--bg);color:var(--text);font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
sans-serif;display:flex;flex-direction:column}
header{display:flex;align-items:center;gap:16px;padding:10px 18px;background:#070c17;border-bottom:1px solid var(--line)}
header h1{font-size:16px;margin:0;font-weight:650;letter-spacing:.2px}
header h1 span{color:var(--muted);font-weight:400}
.live{display:flex;align-items:center;gap:6px;color:var(--muted);font-size:12px}
.dot{width:9px;height:9px;border-radius:50%;background:var(--stale)}
.live.on .dot{background:var(--ok);box-shadow:0 0 0 3px #22c55e2e}
.live.off .dot{background:var(--fault)}
.spacer{flex:1}
.token{display:flex;align-items:center;gap:8px;font-size:12px;color:var(--muted)}
.token input{background:var(--panel);border:1px solid var(--line);color:var(--text);border-radius:6px;padding:5px 8px;
width:190px;font:inherit}
.token input:focus{outline:2px solid #3b5bdb;border-color:transparent}
.token.need input{border-color:var(--warn)}
.token.bad input{border-color:var(--fault)}
#token-state{min-width:90px}
.token.bad #token-state{color:#fca5a5}
.cards{display:grid;grid-template-columns:repeat(7,1fr);gap:10px;padding:12px 18px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:9px 12px}
.card .k{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.6px}
.card .v{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .v small{font-size:13px;color:var(--muted);font-weight:400}
.card.alert .v{color:#f87171}
.card .sub{color:var(--muted);font-size:11px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin-top:2px}
.card.amber .v{color:#fbbf24}
.bar{height:5px;border-radius:3px;background:var(--free);margin-top:6px;overflow:hidden}
.bar i{display:block;height:100%;background:var(--occ)}
main{flex:1;display:grid;grid-template-columns:1fr 340px;gap:12px;padding:12px 18px 14px;min-height:0}
.col{min-height:0;display:flex;flex-direction:column;gap:12px}
.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;display:flex;flex-direction:column;
min-height:0}
.panel h2{font-size:12px;text-transform:uppercase;letter-spacing:.7px;color:var(--muted);margin:0;padding:9px 12px;
border-bottom:1px solid var(--line);display:flex;gap:8px;align-items:center;font-weight:600}
.panel h2 .n{margin-left:auto;text-transform:none;letter-spacing:0}
.scroll{overflow:auto;min-height:0}
#groups{flex:1}
.legend{display:flex;gap:14px;margin-left:auto;text-transform:none;letter-spacing:0;font-weight:400}
.legend span{display:flex;align-items:center;gap:5px}
.legend i{width:12px;height:12px;border-radius:3px;display:inline-block}
.legend i.dotl{width:8px;height:8px;border-radius:50%}
.dotl.batt{background:#fbbf24}.dotl.sig{background:#c084fc}
.group{padding:10px 12px;border-bottom:1px solid var(--line)}
.group:last-child{border-bottom:0}
.ghead{display:flex;align-items:baseline;gap:10px;margin-bottom:7px}
.gname{font-weight:650;font-size:14px}
.gcount{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums}
.gbar{flex:0 0 120px;height:6px;border-radius:3px;background:var(--free);overflow:hidden;margin-left:auto;
align-self:center}
.gbar i{display:block;height:100%;background:var(--occ)}
.bays{display:grid;grid-template-columns:repeat(auto-fill,minmax(52px,1fr));gap:4px}
.bay{position:relative;height:30px;border-radius:5px;border:0;color:#fff;font:600 10px/30px system-ui,sans-serif;
text-align:center;cursor:pointer;padding:0 2px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.bay.free{background:var(--free)}
.bay.occupied{background:var(--occ)}
.bay.fault{background:var(--fault)}
.bay.stale{background:repeating-linear-gradient(135deg,#4b5366 0 5px,#576075 5px 10px);color:#d7dce6}
.bay.gone{background:transparent;border:1px dashed var(--stale);color:var(--muted)}
.bay:hover{filter:brightness(1.2)}
.bay.sel{outline:2px solid #fff;outline-offset:1px}
.bay.flash{animation:flash 1.2s ease-out}
@keyframes flash{0%{box-shadow:0 0 0 3px #fde047}100%{box-shadow:0 0 0 0 transparent}}
.bay b{position:absolute;top:2px;width:6px;height:6px;border-radius:50%}
.bay b.batt{right:2px;background:#fbbf24}
.bay b.sig{left:2px;background:#c084fc}
.feed{font-size:12px}
.ev{display:grid;grid-template-columns:58px 1fr;gap:2px 8px;padding:6px 12px;border-bottom:1px solid #1d2842;
cursor:pointer}
.ev:hover{background:var(--panel2)}
.ev .t{color:var(--muted);font-variant-numeric:tabular-nums}
.ev .w{display:flex;gap:6px;align-items:center;min-width:0}
.ev .g{grid-column:2;color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.chip{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:600;line-height:17px;
background:#334155;color:#e2e8f0;white-space:nowrap}
.chip.free,.chip.online,.chip.alive,.chip.back,.chip.fault_cleared,.chip.battery_normal,.chip.succeeded{background:#14532d;
color:#bbf7d0}
.chip.occupied,.chip.up,.chip.down,.chip.pending,.chip.arrived,.chip.sending,.chip.queued{background:#1e3a8a;
color:#bfdbfe}
.chip.fault_raised,.chip.offline,.chip.failed,.chip.error,.chip.unknown,.chip.refused{background:#7f1d1d;color:#fecaca}
.chip.battery_low,.chip.timeout{background:#78350f;color:#fde68a}
.chip.stale,.chip.gone{background:#3f4657;color:#d1d5db}
#dtus{max-height:210px}
.dtu{display:flex;align-items:center;gap:8px;padding:6px 12px;border-bottom:1px solid #1d2842;cursor:pointer}
.dtu:hover{background:var(--panel2)}
.dtu .sn{font-variant-numeric:tabular-nums}
.dtu .chip{margin-left:auto}
.empty{color:var(--muted);padding:12px}
#feedp{flex:1}
aside{position:fixed;top:0;right:0;bottom:0;width:400px;background:#0f1729;border-left:1px solid var(--line);
box-shadow:-12px 0 30px rgba(0,0,0,.45);transform:translateX(105%);transition:transform .18s ease-out;
display:flex;flex-direction:column;z-index:5}
aside.open{transform:none}
aside .top{display:flex;align-items:flex-start;gap:10px;padding:14px 16px;border-bottom:1px solid var(--line)}
aside h3{margin:0;font-size:17px}
aside .sub{color:var(--muted);font-size:12px;margin-top:2px}
button{font:inherit;cursor:pointer}
.x{margin-left:auto;background:none;border:1px solid var(--line);color:var(--muted);border-radius:6px;width:28px;
height:28px;font-size:16px;line-height:1}
.body{padding:12px 16px;overflow:auto;flex:1}
.chips{display:flex;gap:6px;flex-wrap:wrap;margin-bottom:10px}
table.kv{width:100%;border-collapse:collapse;font-size:12px}
table.kv td{padding:4px 0;border-bottom:1px solid #1d2842;vertical-align:top}
table.kv td:first-child{color:var(--muted);width:44%}
table.kv td:last-child{word-break:break-all}
h4{margin:16px 0 8px;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.6px}
.cmds{display:flex;gap:8px;flex-wrap:wrap}
.btn{background:#1f3a8a;color:#fff;border:1px solid #3b5bdb;border-radius:7px;padding:7px 12px;font-weight:600}
.btn:hover{background:#2748a8}
.btn.danger{background:#7f1d1d;border-color:#b91c1c}
.btn.plain{background:transparent;border-color:var(--line);color:var(--text)}
.btn:disabled{opacity:.45;cursor:not-allowed}
.note{color:var(--muted);font-size:12px;margin-top:8px}
.msg{margin-top:10px;padding:8px 10px;border-radius:7px;font-size:12px;background:#3b1114;border:1px solid #7f1d1d;
color:#fecaca}
.msg.info{background:#132247;border-color:#1e3a8a;color:#bfdbfe}
.course{list-style:none;margin:4px 0 0;padding:0}
.chead{display:flex;gap:8px;align-items:center;margin-top:12px;font-weight:600}
.chead .chip{margin-left:auto}.chead .n{margin-left:auto;color:var(--muted);font-weight:400}
.course li{display:flex;gap:8px;align-items:center;padding:3px 0;font-size:12px}
.course li .t{color:var(--muted);font-variant-numeric:tabular-nums;width:64px}
.course li .r{color:var(--muted);font-size:11px;word-break:break-word}
.modal{position:fixed;inset:0;background:rgba(2,6,16,.6);display:none;align-items:center;justify-content:center;
z-index:10}
.modal.open{display:flex}
.dialog{background:#111a2e;border:1px solid var(--line);border-radius:12px;padding:18px 20px;width:420px;
box-shadow:0 20px 50px rgba(0,0,0,.5)}
.dialog h3{margin:0 0 8px;font-size:16px}
.dialog p{margin:0 0 14px;color:#c3cbe0}
.dialog .row{display:flex;gap:8px;justify-content:flex-end}
#banner{display:none;margin:10px 18px 0;padding:8px 12px;border-radius:8px;background:#3b1114;
border:1px solid #7f1d1d;color:#fecaca}
#banner.show{display:block}
]==]

local SCRIPT = [==[
(function(){
"use strict";
var $=function(id){return document.getElementById(id);};
// every element made here, text only: a serial, a group name, a bay, a
// platform's message may be hostile
function el(tag,cls,text){var e=document.createElement(tag);if(cls)e.className=cls;
  if(text!==undefined&&text!==null)e.textContent=String(text);return e;}
function clear(e){while(e.firstChild)e.removeChild(e.firstChild);}
var UNGROUPED="\u0000ungrouped";
var S={devices:new Map(),tiles:new Map(),cursor:null,summary:null,sel:null,cmds:new Map(),
  token:sessionStorage.getItem("kinot-token")||"",loaded:false};
var CHANGE={occupied:"occupied",free:"free",up:"lock up",down:"lock down",fault_raised:"fault",
  fault_cleared:"fault cleared",battery_low:"battery low",battery_normal:"battery normal",offline:"offline",
  online:"online",stale:"stale",alive:"alive",gone:"gone",back:"back"};
var COMMANDS={lock:[{c:"reset_bt_match_code",label:"Reset BlueTooth match code",danger:false,
  ask:"A new BlueTooth match code is made for this lock: phones paired with the old one must pair again."}],
  sensor:[{c:"activate",label:"Activate",danger:false,ask:"The sensor is activated: it reports occupancy again."},
  {c:"freeze",label:"Freeze",danger:true,ask:"The sensor is frozen: it stops reporting until it is activated."}]};
var FAULTS=/*FAULTS*/[];
var SHORT={coil_fault:"coil",bar_position_error:"bar",motor_fail:"motor",shell_opened:"shell"};
var LABEL={reset_bt_match_code:"Reset BlueTooth match code",activate:"Activate",freeze:"Freeze"};

function headers(json){var h={};if(S.token)h.Authorization="Bearer "+S.token;
  if(json)h["Content-Type"]="application/json";return h;}
function api(path,opt){opt=opt||{};
  return fetch(path,{method:opt.method||"GET",headers:headers(!!opt.body),body:opt.body,cache:"no-store",
    credentials:"omit"}).then(function(r){return r.text().then(function(t){var d=null;
      try{d=JSON.parse(t);}catch(e){d={error:"not JSON: "+t.slice(0,200)};}
      return {status:r.status,body:d};});});}
function banner(text){var b=$("banner");if(text){b.textContent=text;b.className="show";}else{b.className="";}}
function readFailed(r){if(r.status===401){tokenState("need",r.body&&r.body.error);
  banner("This server answers this browser only with the API token: type it in the Token field. ("+
  (r.body&&r.body.error)+")");}else banner("The twin did not answer: "+r.status+" "+(r.body&&r.body.error));}

function fault(d){var s=d.state||{};for(var i=0;i<FAULTS.length;i++)if(s[FAULTS[i]]===1)return FAULTS[i];return null;}
function space(d){return (d.kind==="lock"||d.kind==="sensor");}
function look(d){if(d.gone)return "gone";if(fault(d))return "fault";if(d.stale)return "stale";
  return (d.state&&d.state.car_detected===1)?"occupied":"free";}
function bayName(d){var p=d.place||{};if(p.bay!==undefined&&p.bay!==null)return String(p.bay);
  return (d.kind==="lock"?"L\u2009":"S\u2009")+String(d.sn).slice(-4);}
function groupOf(d){return (d.group===undefined||d.group===null||d.group==="")?UNGROUPED:String(d.group);}
function weak(d){var s=d.state||{};var below=S.summary&&S.summary.weak_signal_below;
  return typeof s.rs_si==="number"&&typeof below==="number"&&s.rs_si<below;}

function tile(d){var b=el("button","bay "+look(d),bayName(d));
  b.dataset.sn=String(d.sn);b.dataset.occupied=(d.state&&d.state.car_detected===1)?"1":"0";
  b.dataset.look=look(d);if(d.gone)b.dataset.gone="1";
  var tip=[d.kind+" "+d.sn,(d.state&&d.state.car_detected===1)?"occupied":"free"];
  if(fault(d))tip.push("fault: "+fault(d));if(d.stale)tip.push("stale");
  if(d.state&&d.state.low_battery===1){b.appendChild(el("b","batt"));tip.push("low battery");}
  if(weak(d)){b.appendChild(el("b","sig"));tip.push("weak signal");}
  b.title=tip.join(" \u00b7 ");
  b.addEventListener("click",function(){openDevice(d.sn);});
  if(S.sel===d.sn)b.classList.add("sel");
  return b;}

function sortGroups(a,b){if(a===UNGROUPED)return 1;if(b===UNGROUPED)return -1;
  return a.localeCompare(b,undefined,{numeric:true});}
function renderGroups(){var box=$("groups-body");clear(box);S.tiles=new Map();
  var groups=new Map();
  S.devices.forEach(function(d){if(!space(d))return;var g=groupOf(d);
    if(!groups.has(g))groups.set(g,[]);groups.get(g).push(d);});
  var names=Array.from(groups.keys()).sort(sortGroups);
  if(!names.length)box.appendChild(el("div","empty",S.loaded?"No lock or sensor in the twin yet.":"Loading\u2026"));
  names.forEach(function(g){var list=groups.get(g);
    list.sort(function(a,b){return bayName(a).localeCompare(bayName(b),undefined,{numeric:true})||a.sn-b.sn;});
    var sec=el("section","group");sec.dataset.group=g===UNGROUPED?"":g;
    var h=el("div","ghead");var name=el("span","gname",g===UNGROUPED?"Ungrouped":g);h.appendChild(name);
    var c=groupCount(g,list);
    var cnt=el("span","gcount",c.free+" free \u00b7 "+c.occupied+" occupied \u00b7 "+c.total+" spaces");
    cnt.dataset.free=String(c.free);cnt.dataset.occupied=String(c.occupied);cnt.dataset.total=String(c.total);
    h.appendChild(cnt);var bar=el("span","gbar");var i=el("i");
    i.style.width=(c.total?Math.round(100*c.occupied/c.total):0)+"%";bar.appendChild(i);h.appendChild(bar);
    sec.appendChild(h);var bays=el("div","bays");
    list.forEach(function(d){var t=tile(d);S.tiles.set(d.sn,t);bays.appendChild(t);});
    sec.appendChild(bays);box.appendChild(sec);});
  $("groups-n").textContent=names.length+(names.length===1?" group":" groups");}
// a group's figures: the twin's counters (the summary) where it has them
function groupCount(g,list){var gs=S.summary&&S.summary.occupancy&&S.summary.occupancy.groups;
  if(g!==UNGROUPED&&gs&&gs[g])return gs[g];
  var o=0,t=0;list.forEach(function(d){if(d.gone)return;t++;if(d.state&&d.state.car_detected===1)o++;});
  return {occupied:o,free:t-o,total:t};}

function updateTile(d){var old=S.tiles.get(d.sn);
  if(!old||groupOf(S.devices.get(d.sn)||d)!==groupOf(d)){S.devices.set(d.sn,d);renderGroups();renderDtus();return;}
  S.devices.set(d.sn,d);var t=tile(d);t.classList.add("flash");old.replaceWith(t);S.tiles.set(d.sn,t);}

function setText(id,v){var e=$(id);e.textContent=String(v);}
function renderSummary(s){S.summary=s;var o=s.occupancy||{};
  setText("occ-occupied",o.occupied);setText("occ-total",o.total);setText("occ-free",o.free);
  $("occ-bar").style.width=(o.total?Math.round(100*o.occupied/o.total):0)+"%";
  var f=s.faults||{};setText("faults",f.devices||0);$("c-faults").classList.toggle("alert",(f.devices||0)>0);
  var parts=[];FAULTS.forEach(function(k){if(f[k])parts.push(f[k]+" "+(SHORT[k]||k.replace(/_/g," ")));});
  setText("faults-by",parts.join(" \u00b7 ")||"none");
  setText("low-battery",s.low_battery||0);$("c-batt").classList.toggle("amber",(s.low_battery||0)>0);
  setText("weak-signal",s.weak_signal||0);$("c-sig").classList.toggle("amber",(s.weak_signal||0)>0);
  var dv=s.devices||{};setText("dtus-offline",s.dtus_offline||0);setText("dtus-total",dv.dtus||0);
  $("c-dtu").classList.toggle("alert",(s.dtus_offline||0)>0);
  setText("stale",s.stale||0);$("c-stale").classList.toggle("amber",(s.stale||0)>0);
  setText("synced",s.synced_at?"synced "+new Date(s.synced_at).toLocaleTimeString():"not synced yet");
  // the groups' counts follow the summary
  document.querySelectorAll(".group").forEach(function(sec){var g=sec.dataset.group;
    var gs=o.groups&&o.groups[g];if(!g||!gs)return;var c=sec.querySelector(".gcount");
    c.textContent=gs.free+" free \u00b7 "+gs.occupied+" occupied \u00b7 "+gs.total+" spaces";
    c.dataset.free=String(gs.free);c.dataset.occupied=String(gs.occupied);c.dataset.total=String(gs.total);
    sec.querySelector(".gbar i").style.width=(gs.total?Math.round(100*gs.occupied/gs.total):0)+"%";});}

function renderDtus(){var box=$("dtus-body");clear(box);var n=0,off=0;
  Array.from(S.devices.values()).filter(function(d){return d.kind==="dtu";}).sort(function(a,b){return a.sn-b.sn;})
  .forEach(function(d){n++;var on=d.state&&d.state.online==="online";if(!on)off++;var r=el("div","dtu");
    r.dataset.sn=String(d.sn);r.appendChild(el("span","sn",d.sn));
    var host=d.state&&d.state.host;if(host)r.appendChild(el("span","g",String(host)));
    var st=d.gone?"gone":(on?"online":String((d.state&&d.state.online)||"unknown"));
    r.appendChild(el("span","chip "+(on?"online":(d.gone?"gone":"offline")),st));
    r.addEventListener("click",function(){openDevice(d.sn);});box.appendChild(r);});
  if(!n)box.appendChild(el("div","empty","No DTU followed (kinot serve --dtus SN,SN)."));
  setText("dtus-n",n?(off+" offline of "+n):"");}

function time(at){var d=typeof at==="number"?new Date(at*1000):new Date(at);
  return isNaN(d)?"":d.toLocaleTimeString([], {hour12:false});}
function feedItem(ev){var r=el("div","ev");r.appendChild(el("span","t",time(ev.at)));
  var w=el("span","w");w.appendChild(el("span","chip "+String(ev.change),CHANGE[ev.change]||String(ev.change)));
  w.appendChild(el("span","",String(ev.kind||"")+" "+ev.sn));if(ev.fault)w.appendChild(el("span","g",String(ev.fault)));
  r.appendChild(w);var d=S.devices.get(ev.sn);var where=ev.group||(d&&d.group);
  r.appendChild(el("span","g",(where?String(where):"ungrouped")+(d&&d.place&&d.place.bay!=null?" \u00b7 bay "+d.place.bay:"")+
    (ev.source?" \u00b7 "+ev.source:"")));
  r.addEventListener("click",function(){openDevice(ev.sn);});return r;}
function addFeed(evs){var box=$("feed-body");var e=box.querySelector(".empty");if(e)box.removeChild(e);
  evs.forEach(function(ev){box.insertBefore(feedItem(ev),box.firstChild);});
  while(box.childNodes.length>80)box.removeChild(box.lastChild);}

// the device list, 1,000 a page: the first, then the others four at a time
function loadDevices(){var all=new Map();
  function page(off){return api("/api/devices?limit=1000&offset="+off).then(function(r){
    if(r.status!==200){readFailed(r);throw new Error("devices "+r.status);}
    r.body.devices.forEach(function(d){all.set(d.sn,d);});return r.body.total;});}
  return page(0).then(function(total){var offs=[];for(var o=1000;o<total;o+=1000)offs.push(o);
    function lane(){var o=offs.shift();return o===undefined?null:page(o).then(lane);}
    return Promise.all([lane(),lane(),lane(),lane()]);
  }).then(function(){S.devices=all;S.loaded=true;renderGroups();renderDtus();});}
function loadSummary(){return api("/api/fleet").then(function(r){if(r.status!==200){readFailed(r);
  throw new Error("fleet "+r.status);}banner(null);renderSummary(r.body);});}
// the feed's end: the cursor after the newest change kept, the last ones shown
function findCursor(){var last=[];function step(since){
  return api("/api/changes?limit=1000"+(since!==null?"&since="+encodeURIComponent(since):"")).then(function(r){
    if(r.status!==200){readFailed(r);throw new Error("changes "+r.status);}
    last=last.concat(r.body.changes).slice(-40);
    if(r.body.changes.length===1000)return step(r.body.next);
    S.cursor=r.body.next;});}
  return step(null).then(function(){clear($("feed-body"));
    if(!last.length)$("feed-body").appendChild(el("div","empty","No change yet."));addFeed(last);});}

var polling=false;
function poll(){if(polling)return;polling=true;
  api("/api/changes?limit=1000"+(S.cursor!==null?"&since="+encodeURIComponent(S.cursor):"")).then(function(r){
    if(r.status!==200){live(false);readFailed(r);return;}live(true);
    var evs=r.body.changes;if(r.body.next!==null)S.cursor=r.body.next;if(!evs.length)return;
    addFeed(evs);var sns=Array.from(new Set(evs.map(function(e){return e.sn;})));
    // the tiles at once from the twin's events, then from its records (the whole truth) and its summary
    evs.forEach(applyEvent);sns.forEach(function(sn){var d=S.devices.get(sn);if(d)updateTile(d);});
    var work=sns.length>200?loadDevices():Promise.all(sns.map(function(sn){
      return api("/api/devices/"+encodeURIComponent(sn)).then(function(d){if(d.status===200)updateTile(d.body);});}));
    return Promise.all([work,loadSummary()]).then(function(){
      if(S.sel!==null&&sns.indexOf(S.sel)>=0)showDevice(S.devices.get(S.sel));
      if(evs.length===1000)setTimeout(poll,0);});
  }).catch(function(){live(false);}).then(function(){polling=false;});}
// a change event laid over the device held (a copy): what it says changed
var FLAG={occupied:["car_detected",1],free:["car_detected",0],up:["locked",1],down:["locked",0],
  battery_low:["low_battery",1],battery_normal:["low_battery",0]};
function applyEvent(ev){var d=S.devices.get(ev.sn);if(!d)return;
  var c=Object.assign({},d,{state:Object.assign({},d.state||{})});var f=FLAG[ev.change];
  if(f)c.state[f[0]]=f[1];
  else if(ev.change==="fault_raised"||ev.change==="fault_cleared"){
    if(FAULTS.indexOf(ev.fault)>=0)c.state[ev.fault]=ev.change==="fault_raised"?1:0;}
  else if(ev.change==="stale"||ev.change==="alive")c.stale=ev.change==="stale";
  else if(ev.change==="gone"||ev.change==="back")c.gone=ev.change==="gone";
  else if(ev.change==="offline"||ev.change==="online")c.state.online=ev.change;
  S.devices.set(ev.sn,c);}
function live(on){var l=$("live");l.className="live "+(on?"on":"off");
  $("live-t").textContent=on?"live":"no answer: retrying";}

// --- a device's detail, and its commands
function openDevice(sn){S.sel=sn;document.querySelectorAll(".bay.sel").forEach(function(b){b.classList.remove("sel");});
  var t=S.tiles.get(sn);if(t)t.classList.add("sel");$("detail").classList.add("open");
  api("/api/devices/"+encodeURIComponent(sn)).then(function(r){if(S.sel!==sn)return;
    if(r.status!==200){clear($("d-body"));$("d-body").appendChild(el("div","msg",(r.body&&r.body.error)||r.status));
      return;}S.devices.set(sn,r.body);showDevice(r.body);});}
function closeDevice(){S.sel=null;$("detail").classList.remove("open");
  document.querySelectorAll(".bay.sel").forEach(function(b){b.classList.remove("sel");});}
function row(t,k,v){var tr=el("tr");tr.appendChild(el("td","",k));tr.appendChild(el("td","",v));t.appendChild(tr);}
function showDevice(d){if(!d)return;
  var kind=d.kind==="lock"?"Lock":d.kind==="sensor"?"Sensor":d.kind==="dtu"?"DTU":String(d.kind);
  $("d-title").textContent=kind+" "+d.sn;
  var p=d.place||{};var sub=[];if(d.group)sub.push("group "+d.group);else if(d.kind!=="dtu")sub.push("ungrouped");
  if(p.bay!==undefined&&p.bay!==null)sub.push("bay "+p.bay);$("d-sub").textContent=sub.join(" \u00b7 ");
  var b=$("d-body");clear(b);var chips=el("div","chips");
  if(space(d)){var l=look(d);chips.appendChild(el("span","chip "+(l==="fault"?"fault_raised":l),l));
    if(l!=="occupied"&&l!=="free")chips.appendChild(el("span","chip "+((d.state.car_detected===1)?"occupied":"free"),
      (d.state.car_detected===1)?"occupied":"free"));}
  else chips.appendChild(el("span","chip "+(d.state&&d.state.online==="online"?"online":"offline"),
    String(d.state&&d.state.online||"unknown")));
  if(fault(d))FAULTS.forEach(function(f){if(d.state[f]===1)chips.appendChild(el("span","chip fault_raised",f));});
  if(d.state&&d.state.low_battery===1)chips.appendChild(el("span","chip battery_low","low battery"));
  if(weak(d))chips.appendChild(el("span","chip battery_low","weak signal"));
  var shown=space(d)?look(d):null;
  if(d.stale&&shown!=="stale")chips.appendChild(el("span","chip stale","stale"));
  if(d.gone&&shown!=="gone")chips.appendChild(el("span","chip gone","gone"));
  b.appendChild(chips);
  var cmdBox=el("div");b.appendChild(cmdBox);renderCommands(d,cmdBox);
  b.appendChild(el("h4","","State"));var t=el("table","kv");
  Object.keys(d.state||{}).sort().forEach(function(k){var v=d.state[k];
    row(t,k,typeof v==="object"?JSON.stringify(v):v);});b.appendChild(t);
  b.appendChild(el("h4","","Record"));t=el("table","kv");
  Object.keys(p).sort().forEach(function(k){row(t,"place."+k,p[k]);});
  row(t,"updated_at (platform)",d.updated_at);row(t,"seen_at",new Date(d.seen_at*1000).toLocaleString());
  row(t,"source",d.source);row(t,"stale",d.stale);row(t,"gone",d.gone);b.appendChild(t);}

function renderCommands(d,box){var list=COMMANDS[d.kind];if(!list)return;
  box.appendChild(el("h4","","Commands"));var row=el("div","cmds");
  var cur=S.cmds.get(d.sn);var busy=!!(cur&&!cur.error&&cur.rec&&!cur.rec.final);
  list.forEach(function(c){var btn=el("button","btn"+(c.danger?" danger":""),c.label);btn.dataset.command=c.c;
    btn.disabled=!!busy;btn.addEventListener("click",function(){ask(d,c);});row.appendChild(btn);});
  box.appendChild(row);
  if(!S.token)box.appendChild(el("div","note","Commands need the API token: type it in the Token field at the top."));
  if(cur)box.appendChild(courseView(cur));}
function courseView(cur){var w=el("div","cmd-course");w.dataset.command=cur.command;
  if(cur.error){var m=el("div","msg",cur.error);m.setAttribute("role","alert");w.appendChild(m);}
  var rec=cur.rec;if(!rec||!rec.course)return w;
  var head=el("div","chead",LABEL[cur.command]||cur.command);if(rec.final)head.appendChild(el("span","chip "+
    String(rec.status),rec.status));else head.appendChild(el("span","n","in course\u2026"));w.appendChild(head);
  var ul=el("ul","course");rec.course.forEach(function(s){var li=el("li");li.appendChild(el("span","t",time(s.at)));
    li.appendChild(el("span","chip "+String(s.status),s.status));ul.appendChild(li);});
  w.appendChild(ul);if(rec.reason)w.appendChild(el("div","note",rec.reason));
  w.dataset.status=String(rec.status);if(rec.final)w.dataset.final=String(rec.status);return w;}

function rid(){var a=new Uint8Array(16);crypto.getRandomValues(a);
  return Array.from(a,function(x){return ("0"+x.toString(16)).slice(-2);}).join("");}
var pending=null;
function ask(d,c){pending={d:d,c:c,id:rid()};var kind=d.kind==="lock"?"lock":"sensor";
  $("m-title").textContent=c.label+" \u2014 "+kind+" "+d.sn+"?";$("m-text").textContent=c.ask;
  $("m-token").textContent=S.token?"":"No API token is set: the server will refuse it.";
  $("m-send").disabled=false;$("m-send").className="btn"+(c.danger?" danger":"");$("modal").classList.add("open");
  $("m-send").focus();}
function cancel(){pending=null;$("modal").classList.remove("open");}
function send(){if(!pending)return;var p=pending;pending=null;$("m-send").disabled=true;$("modal").classList.remove("open");
  var cur={sn:p.d.sn,command:p.c.c,id:p.id,rec:{course:[],final:false},error:null};S.cmds.set(p.d.sn,cur);redraw(p.d.sn);
  post(cur,0);}
// the POST goes again only with the same request_id: the server sends it once
function post(cur,tries){api("/api/devices/"+encodeURIComponent(cur.sn)+"/commands",{method:"POST",
    body:JSON.stringify({command:cur.command,request_id:cur.id})}).then(function(r){
    if(r.status===401||r.status===403){cur.error=r.status===403?"Not sent: "+r.body.error:
      (r.body.reason==="wrong"?"Not sent: the API token is wrong. Check the Token field.":
      "Not sent: a command needs the API token. Type it in the Token field at the top.");
      tokenState(r.status===403?"off":(r.body.reason==="wrong"?"bad":"need"),r.body.error);
      cur.rec=null;redraw(cur.sn);return;}
    if(r.body&&r.body.course){cur.rec=r.body;if(r.status===409)cur.error="Not sent: "+(r.body.reason||"refused");
      if(r.status===202||r.status===200)tokenState("ok");redraw(cur.sn);if(!r.body.final)follow(cur);return;}
    cur.error="Not sent: "+((r.body&&r.body.error)||("HTTP "+r.status));cur.rec=null;redraw(cur.sn);
  }).catch(function(){if(tries<4)setTimeout(function(){post(cur,tries+1);},500*(tries+1));
    else{cur.error="The server did not answer: the command may have gone out; this page will not send it again.";
      redraw(cur.sn);}});}
// the course as the server follows it (its timer gives up after 120 s; this page after 150 s)
function follow(cur){if(!cur.since)cur.since=Date.now();
  if(Date.now()-cur.since>150000){cur.error="No final status came from the server in 150 s: it is not sent again.";
    redraw(cur.sn);return;}
  setTimeout(function(){api("/api/commands/"+encodeURIComponent(cur.id)).then(function(r){
    if(r.status===200){cur.rec=r.body;redraw(cur.sn);}if(!(r.status===200&&r.body.final)&&r.status!==404)follow(cur);
  }).catch(function(){follow(cur);});},500);}
function redraw(sn){if(S.sel===sn)showDevice(S.devices.get(sn));}

function tokenState(st,why){var t=$("tok");t.classList.remove("need","bad");var s=$("token-state");
  if(st==="need"){t.classList.add("need");s.textContent=S.token?"token refused":"token needed";}
  else if(st==="bad"){t.classList.add("bad");s.textContent="wrong token";}
  else if(st==="ok"){s.textContent="token accepted";}
  else if(st==="off"){t.classList.add("need");s.textContent="commands off here";}
  else s.textContent=S.token?"token set":"no token";
  if(why)s.title=why;}

function start(){$("token").value=S.token;tokenState();
  $("token").addEventListener("input",function(){S.token=$("token").value.trim();
    if(S.token)sessionStorage.setItem("kinot-token",S.token);else sessionStorage.removeItem("kinot-token");tokenState();
    if(S.sel!==null)redraw(S.sel);});
  $("d-close").addEventListener("click",closeDevice);$("m-cancel").addEventListener("click",cancel);
  $("m-send").addEventListener("click",send);
  document.addEventListener("keydown",function(e){if(e.key==="Escape"){if(pending)cancel();else closeDevice();}});
  function boot(){return findCursor().then(loadSummary).then(loadDevices).then(loadSummary).then(function(){
      live(true);document.body.dataset.ready="1";setInterval(poll,500);
      setInterval(function(){loadSummary().catch(function(){});},10000);
      setInterval(function(){loadDevices().catch(function(){});},60000);})
    .catch(function(){live(false);setTimeout(boot,2000);});}
  boot();}
start();
})();
]==]

local BODY = [==[
<header>
  <h1>kinot <span>&middot; car park</span></h1>
  <div class="live" id="live"><span class="dot"></span><span id="live-t">connecting</span></div>
  <div class="live" id="synced"></div>
  <div class="spacer"></div>
  <label class="token" id="tok"><span>API token</span>
    <input id="token" type="password" autocomplete="off" spellcheck="false" placeholder="needed for commands">
    <span id="token-state"></span></label>
</header>
<div id="banner" role="alert"></div>
<section class="cards">
  <div class="card"><div class="k">Occupied</div><div class="v"><span id="occ-occupied">&ndash;</span>
    <small>of <span id="occ-total">&ndash;</span></small></div><div class="bar"><i id="occ-bar"></i></div></div>
  <div class="card"><div class="k">Free spaces</div><div class="v" id="occ-free">&ndash;</div></div>
  <div class="card" id="c-faults"><div class="k">Faults</div><div class="v" id="faults">&ndash;</div>
    <div class="sub" id="faults-by"></div></div>
  <div class="card" id="c-batt"><div class="k">Low battery</div><div class="v" id="low-battery">&ndash;</div></div>
  <div class="card" id="c-sig"><div class="k">Weak signal</div><div class="v" id="weak-signal">&ndash;</div></div>
  <div class="card" id="c-dtu"><div class="k">DTUs offline</div><div class="v"><span id="dtus-offline">&ndash;</span>
    <small>of <span id="dtus-total">&ndash;</span></small></div></div>
  <div class="card" id="c-stale"><div class="k">Stale</div><div class="v" id="stale">&ndash;</div></div>
</section>
<main>
  <section class="panel" id="groups">
    <h2>Occupancy by group <span id="groups-n"></span>
      <span class="legend"><span><i class="bay free"></i>free</span><span><i class="bay occupied"></i>occupied</span>
      <span><i class="bay fault"></i>fault</span><span><i class="bay stale"></i>stale</span>
      <span><i class="bay gone"></i>gone</span><span><i class="dotl batt"></i>low battery</span>
      <span><i class="dotl sig"></i>weak signal</span></span></h2>
    <div class="scroll" id="groups-body"><div class="empty">Loading&hellip;</div></div>
  </section>
  <div class="col">
    <section class="panel" id="feedp"><h2>Changes <span class="n" id="feed-n">live</span></h2>
      <div class="scroll feed" id="feed-body"></div></section>
    <section class="panel" id="dtus"><h2>DTUs <span class="n" id="dtus-n"></span></h2>
      <div class="scroll" id="dtus-body"></div></section>
  </div>
</main>
<aside id="detail" aria-live="polite">
  <div class="top"><div><h3 id="d-title"></h3><div class="sub" id="d-sub"></div></div>
    <button class="x" id="d-close" title="Close (Esc)">&times;</button></div>
  <div class="body" id="d-body"></div>
</aside>
<div class="modal" id="modal"><div class="dialog" role="dialog" aria-modal="true" aria-labelledby="m-title">
  <h3 id="m-title"></h3><p id="m-text"></p><p class="note" id="m-token"></p>
  <div class="row"><button class="btn plain" id="m-cancel">Cancel</button><button class="btn" id="m-send">Send command</button></div>
</div></div>
]==]

-- the fault flags, as kinot.vocabulary spells them (a lock's list holds every one)
do
  local names = {}
  for i, f in ipairs(require("kinot.vocabulary").faults.lock) do names[i] = '"' .. f .. '"' end
  SCRIPT = SCRIPT:gsub("/%*FAULTS%*/%[%]", function() return "[" .. table.concat(names, ",") .. "]" end)
end

M.STYLE, M.SCRIPT = STYLE, SCRIPT

--- page() -> the page's HTML
function M.page()
  return "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">" ..
    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">" ..
    "<meta name=\"referrer\" content=\"no-referrer\"><title>kinot &middot; car park</title>" ..
    "<style>" .. STYLE .. "</style></head><body>" .. BODY .. "<script>" .. SCRIPT .. "</script></body></html>\n"
end

local csp
--- csp() -> the Content-Security-Policy: the page's own inline style and
-- script (by their SHA-256), connections to this origin, nothing else
function M.csp()
  if csp then return csp end
  local core = require "kinot.core"
  local function hash(text) return "'sha256-" .. core.digest("sha256", text, nil, "base64") .. "'" end
  csp = "default-src 'none'; script-src " .. hash(SCRIPT) .. "; style-src " .. hash(STYLE) ..
    "; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
  return csp
end

--- nginx(): answers GET / in a content handler
function M.nginx()
  local ngx = rawget(_G, "ngx")
  local method = ngx.req.get_method()
  if method ~= "GET" and method ~= "HEAD" then
    ngx.status = 405
    ngx.header["Allow"] = "GET, HEAD"
    ngx.say('{"error":"the dashboard answers GET"}')
    return
  end
  ngx.header["Content-Type"] = "text/html; charset=utf-8"
  ngx.header["Content-Security-Policy"] = M.csp()
  ngx.header["X-Content-Type-Options"] = "nosniff"
  ngx.header["Referrer-Policy"] = "no-referrer"
  ngx.header["Cache-Control"] = "no-store"
  if method == "GET" then ngx.print(M.page()) end
end

return M
